DROP TABLE relay_cursors;
DROP TABLE event_stats;
DROP TABLE event_tags;
DROP TABLE events;
