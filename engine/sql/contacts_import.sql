-- name: create_import_stage
-- The per-connection staging table for one batch of an import (dropped when the
-- import ends).
CREATE TEMP TABLE IF NOT EXISTS audience_import_stage (
    phone       text NOT NULL,
    first_name  text,
    last_name   text,
    locale      text,
    timezone    text,
    attributes  text NOT NULL
);

-- name: clear_import_stage
-- Emptied in each batch's transaction, which may be a savepoint in the caller's.
TRUNCATE audience_import_stage;

-- name: drop_import_stage
DROP TABLE IF EXISTS audience_import_stage;

-- name: import_started_at
-- The import's start: contacts written since then by an earlier batch are repeats.
SELECT now();

-- name: ensure_group
-- The group's id, creating it if missing (DO UPDATE so the id returns even on conflict).
INSERT INTO groups (name) VALUES ($1)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING id;

-- name: apply_import_batch
-- Apply the staged batch: upsert contacts and add them to group $1 (NULL: none). Counts
-- new contacts, updated ones, and repeats: numbers an earlier batch of this import (which
-- started at $2) already wrote. Every CTE reads the snapshot from before the statement,
-- so `earlier` sees the contacts as they were; its scalar subquery is one index probe
-- a row whatever the table's size. `xmax = 0` holds exactly for freshly inserted rows.
WITH earlier AS (
    SELECT count(*) AS n
    FROM audience_import_stage s
    WHERE (SELECT c.updated_at FROM contacts c WHERE c.phone = s.phone) >= $2
), upserted AS (
    INSERT INTO contacts AS c (phone, first_name, last_name, locale, timezone, attributes)
    SELECT phone, first_name, last_name, locale, timezone, attributes::jsonb
    FROM audience_import_stage
    ON CONFLICT (phone) DO UPDATE SET
        first_name = COALESCE(EXCLUDED.first_name, c.first_name),
        last_name  = COALESCE(EXCLUDED.last_name, c.last_name),
        locale     = COALESCE(EXCLUDED.locale, c.locale),
        timezone   = COALESCE(EXCLUDED.timezone, c.timezone),
        attributes = c.attributes || EXCLUDED.attributes,
        updated_at = now()
    RETURNING c.id, (c.xmax = 0) AS inserted
), joined AS (
    INSERT INTO group_members (group_id, contact_id)
    SELECT $1::bigint, id FROM upserted WHERE $1::bigint IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT count(*) FILTER (WHERE inserted)                          AS inserted,
       count(*) FILTER (WHERE NOT inserted) - (SELECT n FROM earlier) AS updated,
       (SELECT n FROM earlier)                                    AS repeated
FROM upserted;
