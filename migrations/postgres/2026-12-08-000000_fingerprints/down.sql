DROP TABLE fingerprints;
