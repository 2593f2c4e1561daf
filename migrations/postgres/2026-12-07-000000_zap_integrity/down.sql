DROP INDEX zap_servers_due;
ALTER TABLE zap_servers DROP COLUMN failures;
ALTER TABLE zap_servers DROP COLUMN next_check;
ALTER TABLE zap_servers DROP COLUMN keys;
DROP TABLE zap_counted;
DROP TABLE zap_pending;
