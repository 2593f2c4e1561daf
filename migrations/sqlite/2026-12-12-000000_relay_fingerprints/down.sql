CREATE TABLE store_fingerprints (
    second BIGINT NOT NULL,
    kind INTEGER NOT NULL,
    n BIGINT NOT NULL,
    l0 BIGINT NOT NULL,
    l1 BIGINT NOT NULL,
    l2 BIGINT NOT NULL,
    l3 BIGINT NOT NULL,
    l4 BIGINT NOT NULL,
    l5 BIGINT NOT NULL,
    l6 BIGINT NOT NULL,
    l7 BIGINT NOT NULL,
    PRIMARY KEY (second, kind)
);
INSERT INTO store_fingerprints SELECT second, kind, n, l0, l1, l2, l3, l4, l5, l6, l7
FROM fingerprints WHERE relay_id = 0;
DROP TABLE fingerprints;
ALTER TABLE store_fingerprints RENAME TO fingerprints;
