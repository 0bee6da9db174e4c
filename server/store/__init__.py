"""The SQL store: the database resource, the tables, and the registry (import from YAML, the
index ingest checks against). The bottom of the server: imports nothing of the server's."""
