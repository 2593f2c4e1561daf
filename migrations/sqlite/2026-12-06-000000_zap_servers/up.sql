-- NIP-57 appendix F: per zap recipient, the key their LNURL server signs receipts with
-- (NULL: it signs none), as last fetched. Receipts of a recipient not listed here wait
-- in the aggregation backlog (events.aggregated false) until the server is known.
CREATE TABLE zap_servers (
    recipient TEXT PRIMARY KEY,
    server TEXT,
    checked_at BIGINT NOT NULL
);
