DROP TABLE relay_scores;
DROP TABLE event_relays;
DROP TABLE relay_ids;
