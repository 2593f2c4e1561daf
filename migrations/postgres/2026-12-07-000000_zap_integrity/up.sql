-- Zap receipts are judged against the database (src/nostr/zap.rs): the recipient must
-- be the target's author or one of its zap splits, and the signer a key the
-- recipient's LNURL server named.

-- Receipts that hold together and wait to be judged: their target is not stored yet,
-- or their recipient's server has not answered since they arrived. Looked up by
-- target when events arrive and by recipient when a server answers. A row whose
-- event is gone is dropped when it is next looked at.
CREATE TABLE zap_pending (
    seq BIGINT PRIMARY KEY,
    recipient TEXT NOT NULL,
    target TEXT NOT NULL
);
CREATE INDEX zap_pending_recipient ON zap_pending (recipient, seq);
CREATE INDEX zap_pending_target ON zap_pending (target);

-- Receipts whose zap is in event_stats: what removing one of them retracts.
CREATE TABLE zap_counted (id TEXT PRIMARY KEY);

-- Per recipient: the few keys their server named, newest first (comma-separated hex);
-- checked_at, when it last answered (0: never); next_check, when it is to be asked
-- (NULL: nothing waits for it); failures in a row since it last answered.
ALTER TABLE zap_servers ADD COLUMN keys TEXT NOT NULL DEFAULT '';
ALTER TABLE zap_servers ADD COLUMN next_check BIGINT;
ALTER TABLE zap_servers ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
UPDATE zap_servers SET keys = COALESCE(server, '');
CREATE INDEX zap_servers_due ON zap_servers (next_check) WHERE next_check IS NOT NULL;

-- Receipts counted before were judged without their target: judge every one again.
UPDATE event_stats SET zaps = 0, zap_msats = 0 WHERE zaps <> 0 OR zap_msats <> 0;
UPDATE retractions SET zaps = 0, zap_msats = 0 WHERE zaps <> 0 OR zap_msats <> 0;
UPDATE events SET aggregated = FALSE WHERE kind = 9735 AND aggregated;
