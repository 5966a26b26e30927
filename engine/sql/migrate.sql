-- name: migrations_bootstrap
-- The bookkeeping table of applied migrations (made before the first migration runs).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
-- Every migration applied so far, with the checksum of the file as it was applied.
SELECT version, name, checksum, applied_at FROM schema_migrations;

-- name: record_migration
-- One migration applied (in the same transaction as its SQL).
INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: migrations_lock
-- Several processes may migrate at once: one applies, the others wait and find nothing left.
SELECT pg_advisory_lock($1);

-- name: migrations_unlock
SELECT pg_advisory_unlock($1);

-- name: migrations_table_exists
-- Whether this database was ever migrated (no bookkeeping table: no tables at all).
SELECT to_regclass('schema_migrations') IS NOT NULL;
