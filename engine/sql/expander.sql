-- name: group_ids
-- Ids of the named groups; a name with no group simply matches nothing.
SELECT id, name FROM groups WHERE name = ANY($1::text[]);

-- name: audience_batch
-- The next batch of a run's recipients in contact-id order after the keyset checkpoint
-- $1: each included group contributes at most $7 ids from its (group_id, contact_id)
-- index, so a batch costs O(groups x batch) however large the audience. Listed phones
-- ($3) join in; UNION dedupes a contact reached twice. Excluded contacts ($4) are
-- returned flagged, so the checkpoint moves past them. Suppression ($5 = channel) and
-- the frequency-cap count since $6 (NULL: no cap) are looked up per contact by index.
-- The id range on contacts keeps its scan to this batch's keys (without it the planner
-- may hash-join the whole table on every batch).
WITH ids AS (
    SELECT m.contact_id AS id
      FROM unnest($2::bigint[]) AS g(id)
     CROSS JOIN LATERAL (
           SELECT gm.contact_id
             FROM group_members gm
            WHERE gm.group_id = g.id AND gm.contact_id > $1
            ORDER BY gm.contact_id
            LIMIT $7) m
    UNION
    SELECT c.id FROM contacts c WHERE c.phone = ANY($3::text[]) AND c.id > $1
    ORDER BY 1
    LIMIT $7
)
SELECT c.id, c.phone, c.first_name, c.last_name, c.locale, c.timezone, c.attributes,
       EXISTS (SELECT 1 FROM group_members x
                WHERE x.contact_id = c.id AND x.group_id = ANY($4::bigint[])) AS excluded,
       EXISTS (SELECT 1 FROM suppressions s
                WHERE s.phone = c.phone AND s.channel IN ('*', $5)) AS suppressed,
       CASE WHEN $6::timestamptz IS NULL THEN 0
            ELSE (SELECT count(*) FROM messages m
                   WHERE m.phone = c.phone AND m.created_at >= $6
                     AND m.status IN ('queued', 'sending', 'sent', 'delivered', 'read', 'unknown'))
       END AS recent
  FROM ids JOIN contacts c ON c.id = ids.id
 WHERE c.id > $1 AND c.id <= (SELECT max(id) FROM ids)
 ORDER BY c.id;

-- name: audience_duplicates
-- How many times a recipient was reached through a second source (two groups, or a
-- group and the listed contacts): each such occurrence is one 'duplicate'.
WITH occurrences AS (
    SELECT contact_id AS id FROM group_members WHERE group_id = ANY($1::bigint[])
    UNION ALL
    SELECT id FROM contacts WHERE phone = ANY($2::text[])
)
SELECT count(*) - count(DISTINCT id) FROM occurrences;

-- name: insert_invalid_recipients
-- The campaign file's rows whose number could not be read, as invalid_number messages.
INSERT INTO messages (run_id, phone, channel, account, status, error_code, error_detail)
SELECT $1, i.raw, $3, $4, 'invalid_number', 'invalid_number',
       'line ' || i.line || ': ' || i.reason
  FROM campaign_invalid_recipients i
 WHERE i.campaign_id = $2
ON CONFLICT (run_id, phone) DO NOTHING;

-- name: save_checkpoint
-- Committed with the batch it follows, so a crash resumes exactly after it. Returns no
-- row when the run stopped expanding (cancelled or paused meanwhile).
UPDATE campaign_runs SET checkpoint = $2, updated_at = now()
 WHERE id = $1 AND status = 'expanding'
RETURNING id;

-- name: run_tally
-- Per-status counts and the estimated cost of what will be sent.
SELECT status::text, count(*) AS n,
       coalesce(sum(cost) FILTER (WHERE status = 'queued'), 0) AS cost
  FROM messages WHERE run_id = $1
 GROUP BY status;

-- name: finish_expansion
-- A run over budget sends nothing: its queued messages end 'cancelled' with the error
-- code 'over_budget' and the reason (no queue shows them due), and its counts say so.
-- `engine campaign resume` re-queues them once the budget allows.
WITH run AS (
    UPDATE campaign_runs
       SET status = $2::run_status, reason = $3, recipients = $4, estimated_cost = $5,
           counts = CASE WHEN $2::run_status = 'over_budget'
                         THEN ($6::jsonb - 'queued') || jsonb_build_object('cancelled',
                              coalesce(($6::jsonb ->> 'queued')::bigint, 0)
                              + coalesce(($6::jsonb ->> 'cancelled')::bigint, 0))
                         ELSE $6::jsonb END,
           expanded_at = now(), claimed_by = NULL, updated_at = now()
     WHERE id = $1 AND status = 'expanding'
    RETURNING id, status
), cancelled AS (
    UPDATE messages m
       SET status = 'cancelled', error_code = 'over_budget', error_detail = $3,
           updated_at = now()
      FROM run
     WHERE run.status = 'over_budget' AND m.run_id = run.id AND m.status = 'queued'
)
SELECT id FROM run;

-- name: fail_run
UPDATE campaign_runs SET status = 'failed', reason = $2, claimed_by = NULL, updated_at = now()
 WHERE id = $1;

-- name: notify_work
-- Wake the dispatchers: a run has messages to send.
SELECT pg_notify('engine', $1);

-- name: lock_run
-- Hold the run's expansion lock ($1 = run_lock_key) for this session: a dead expander's
-- session ends and frees it, so another can resume the run.
SELECT pg_advisory_lock($1);

-- name: try_lock_run
-- Take an orphaned run's expansion lock if nobody holds it; true when taken.
SELECT pg_try_advisory_lock($1);

-- name: unlock_run
-- Release the run's expansion lock once its expansion has ended, however it ended.
SELECT pg_advisory_unlock($1);

-- name: run_status
-- A run's status, as text (after an expansion stopped because the run left 'expanding').
SELECT status::text FROM campaign_runs WHERE id = $1;
