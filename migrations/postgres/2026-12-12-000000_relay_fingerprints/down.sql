DELETE FROM fingerprints WHERE relay_id <> 0;
ALTER TABLE fingerprints DROP CONSTRAINT fingerprints_pkey;
ALTER TABLE fingerprints DROP COLUMN relay_id;
ALTER TABLE fingerprints ADD PRIMARY KEY (second, kind);
