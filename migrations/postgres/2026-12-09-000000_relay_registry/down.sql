DROP TABLE instances;
DROP TABLE relays;
