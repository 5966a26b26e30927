-- name: campaign_for_apply
-- The stored campaign, locked so that two applies of the same name take turns.
SELECT id, spec_hash, status::text, archived_at FROM campaigns WHERE name = $1 FOR UPDATE;

-- name: active_run
-- A run of the campaign that is still in progress (the campaign cannot change then).
SELECT id, status::text FROM campaign_runs
 WHERE campaign_id = $1 AND status IN ('scheduled', 'expanding', 'sending', 'paused')
 ORDER BY scheduled_for LIMIT 1;

-- name: insert_campaign
-- A campaign with no firing left (a cron past its 'until') is stored as finished.
INSERT INTO campaigns (name, spec, spec_hash, source_path, status, next_run_at)
VALUES ($1, $2, $3, $4,
        CASE WHEN $5::timestamptz IS NULL THEN 'finished' ELSE 'active' END::campaign_status, $5)
RETURNING id;

-- name: update_campaign
-- A changed file also brings an archived campaign back.
UPDATE campaigns
   SET spec = $2, spec_hash = $3, source_path = $4, next_run_at = $5, updated_at = now(),
       archived_at = NULL,
       status = CASE WHEN $5::timestamptz IS NULL THEN 'finished' ELSE 'active' END::campaign_status
 WHERE id = $1;

-- name: clear_invalid_recipients
DELETE FROM campaign_invalid_recipients WHERE campaign_id = $1;

-- name: insert_invalid_recipients_of_file
INSERT INTO campaign_invalid_recipients (campaign_id, line, raw, reason)
SELECT $1, line, raw, reason FROM unnest($2::int[], $3::text[], $4::text[]) AS t(line, raw, reason)
ON CONFLICT DO NOTHING;

-- name: clear_group_members
-- A campaign's file group is replaced, not added to, when its file is applied again.
DELETE FROM group_members
 WHERE group_id = (SELECT id FROM groups WHERE name = $1);

-- name: list_campaigns
-- Each campaign with its latest run (if any); archived ones only when $1 (--all).
SELECT c.name,
       CASE WHEN c.archived_at IS NULL THEN c.status::text
            WHEN c.status IN ('finished', 'cancelled') THEN 'archived (' || c.status::text || ')'
            ELSE 'archived' END AS status,
       c.next_run_at, c.spec->'schedule' AS schedule,
       r.id AS run_id, r.status::text AS run_status, r.scheduled_for, r.recipients, r.counts
  FROM campaigns c
  LEFT JOIN LATERAL (SELECT * FROM campaign_runs
                      WHERE campaign_id = c.id ORDER BY scheduled_for DESC, id DESC LIMIT 1) r
    ON true
 WHERE $1 OR c.archived_at IS NULL
 ORDER BY c.name;

-- name: campaign_by_name
SELECT id, name, spec, status::text, next_run_at FROM campaigns WHERE name = $1;

-- name: runs_of_campaign
-- A campaign's runs, newest first, with live per-status counts.
SELECT r.id, r.kind, r.status::text, r.reason, r.scheduled_for, r.started_at,
       r.expanded_at, r.finished_at, r.estimated_cost, r.counts,
       (SELECT coalesce(jsonb_object_agg(s, n), '{}'::jsonb)
          FROM (SELECT status::text AS s, count(*) AS n FROM messages
                 WHERE run_id = r.id GROUP BY status) t) AS live_counts
  FROM campaign_runs r
 WHERE r.campaign_id = $1
 ORDER BY r.scheduled_for DESC, r.id DESC
 LIMIT $2;

-- name: insert_manual_run
INSERT INTO campaign_runs (campaign_id, scheduled_for, kind, status, spec)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- name: insert_test_message
INSERT INTO messages (run_id, contact_id, phone, channel, account, sender, body, locale,
                      encoding, segments, cost, status, next_attempt_at, expires_at,
                      error_code, error_detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::message_status, $13, $14, $15, $16)
RETURNING id;

-- name: contact_by_phone
SELECT id, phone, first_name, last_name, locale, timezone, attributes,
       false AS excluded,
       EXISTS (SELECT 1 FROM suppressions s
                WHERE s.phone = contacts.phone AND s.channel IN ('*', $2)) AS suppressed,
       0 AS recent
  FROM contacts WHERE phone = $1;

-- name: is_suppressed_on
SELECT EXISTS (SELECT 1 FROM suppressions WHERE phone = $1 AND channel IN ('*', $2));
