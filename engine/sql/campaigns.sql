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
-- Each campaign with its latest real run (if any): a test send is not the campaign's
-- outcome, as in the reports. The cost of accepted messages counts what the view
-- campaign_outcomes counts as accepted (without its latency percentiles, which sort).
-- Archived campaigns only when $1 (--all).
SELECT c.name,
       CASE WHEN c.archived_at IS NULL THEN c.status::text
            WHEN c.status IN ('finished', 'cancelled') THEN 'archived (' || c.status::text || ')'
            ELSE 'archived' END AS status,
       c.next_run_at, c.spec->'schedule' AS schedule,
       r.id AS run_id, r.status::text AS run_status, r.scheduled_for, r.recipients, r.counts,
       r.estimated_cost, CASE WHEN r.id IS NOT NULL THEN a.cost END AS cost
  FROM campaigns c
  LEFT JOIN LATERAL (SELECT * FROM campaign_runs
                      WHERE campaign_id = c.id AND kind <> 'test'
                      ORDER BY scheduled_for DESC, id DESC LIMIT 1) r
    ON true
  LEFT JOIN LATERAL (SELECT coalesce(sum(m.cost), 0) AS cost
                       FROM messages m
                      WHERE m.run_id = r.id
                        AND (m.sent_at IS NOT NULL
                             OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))) a
    ON true
 WHERE $1 OR c.archived_at IS NULL
 ORDER BY c.name;

-- name: campaign_by_name
SELECT id, name, spec, status::text, next_run_at FROM campaigns WHERE name = $1;

-- name: runs_of_campaign
-- A campaign's runs, newest first, with live per-status counts and the cost of accepted
-- messages (accepted as the view campaign_outcomes counts it).
SELECT r.id, r.kind, r.status::text, r.reason, r.scheduled_for, r.started_at,
       r.expanded_at, r.finished_at, r.estimated_cost, r.counts,
       (SELECT coalesce(sum(m.cost), 0) FROM messages m
         WHERE m.run_id = r.id
           AND (m.sent_at IS NOT NULL
                OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))) AS cost,
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
                      error_code, error_detail, variant)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::message_status, $13, $14, $15, $16,
        $17)
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

-- name: latest_real_run_for_update
-- The campaign's latest run other than test sends, locked so two resumes take turns;
-- with the campaign's next firing when it is due and later than that run (a 'now'
-- campaign applied again fires anew: that run will send, so this one must not).
SELECT r.id, r.status::text, r.reason, r.spec->>'provider' AS account,
       CASE WHEN c.status = 'active' AND c.next_run_at <= now()
                 AND c.next_run_at > r.scheduled_for THEN c.next_run_at END AS newer_firing
  FROM campaign_runs r JOIN campaigns c ON c.id = r.campaign_id
 WHERE r.campaign_id = $1 AND r.kind <> 'test'
 ORDER BY r.scheduled_for DESC, r.id DESC
 LIMIT 1
   FOR UPDATE OF r;

-- name: over_budget_messages
-- What the budget gate cancelled in run $1: how many messages, at what estimated cost.
SELECT count(*) AS n, coalesce(sum(cost), 0) AS cost
  FROM messages
 WHERE run_id = $1 AND status = 'cancelled' AND error_code = 'over_budget';

-- name: requeue_over_budget
-- The budget now allows run $1: its budget-cancelled messages go back to the queue (due
-- at the time expansion gave them) and the run sends.
WITH msgs AS (
    UPDATE messages
       SET status = 'queued', error_code = NULL, error_detail = NULL, updated_at = now()
     WHERE run_id = $1 AND status = 'cancelled' AND error_code = 'over_budget'
    RETURNING id
)
UPDATE campaign_runs
   SET status = 'sending', reason = NULL, updated_at = now(),
       counts = (counts - 'cancelled')
                || jsonb_build_object('queued', (SELECT count(*) FROM msgs))
 WHERE id = $1 AND status = 'over_budget'
RETURNING (SELECT count(*) FROM msgs) AS requeued;
