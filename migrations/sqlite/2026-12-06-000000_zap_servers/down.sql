DROP TABLE zap_servers;
