-- The relay endpoint's reads without a kind or an author (a client paging the whole
-- history, newest first) walk this index instead of sorting every event.
CREATE INDEX events_created_at ON events (created_at);
