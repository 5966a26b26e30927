-- name: register_worker
INSERT INTO workers (id, hostname, pid, roles, accounts)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL;

-- name: heartbeat
-- Beat, and count the live dispatchers per account so each can take its share of the
-- account's rate (a daemon that stopped beating for $2 is dead and no longer counts).
WITH beat AS (
    UPDATE workers SET heartbeat_at = now() WHERE id = $1
)
SELECT account, count(*) AS live
  FROM workers, unnest(accounts) AS account
 WHERE stopped_at IS NULL AND heartbeat_at > now() - $2::interval
   AND 'dispatcher' = ANY(roles)
 GROUP BY account;

-- name: stop_worker
UPDATE workers SET stopped_at = now() WHERE id = $1;

-- name: live_workers
SELECT id, hostname, pid, roles, accounts, started_at, heartbeat_at
  FROM workers
 WHERE stopped_at IS NULL AND heartbeat_at > now() - $1::interval
 ORDER BY started_at;

-- name: pause_campaign
-- Stop new firings and every run in progress; the dispatcher claims only 'sending' runs
-- and the expander checkpoints only 'expanding' ones, so this one statement stops both.
WITH c AS (
    UPDATE campaigns SET status = 'paused', updated_at = now()
     WHERE name = $1 AND status = 'active' RETURNING id
)
UPDATE campaign_runs r SET status = 'paused', reason = 'paused by ' || $2, updated_at = now()
  FROM campaigns k
 WHERE k.name = $1 AND r.campaign_id = k.id
   AND r.status IN ('scheduled', 'expanding', 'sending')
RETURNING r.id;

-- name: resume_campaign
-- Paused runs continue where they were: expansion resumes from its checkpoint, sending
-- from the queue. (Runs stopped by the budget gate are re-checked separately, in
-- campaigns.resume_over_budget.)
WITH c AS (
    UPDATE campaigns SET status = 'active', updated_at = now()
     WHERE name = $1 AND status = 'paused' RETURNING id
)
UPDATE campaign_runs r
   SET status = CASE WHEN r.expanded_at IS NULL THEN 'scheduled' ELSE 'sending' END::run_status,
       reason = NULL, updated_at = now()
  FROM campaigns k
 WHERE k.name = $1 AND r.campaign_id = k.id AND r.status = 'paused'
RETURNING r.id;

-- name: cancel_campaign
-- No more firings; runs in progress end 'cancelled' and their unsent messages too.
WITH c AS (
    UPDATE campaigns SET status = 'cancelled', next_run_at = NULL, updated_at = now()
     WHERE name = $1 RETURNING id
), runs AS (
    UPDATE campaign_runs r SET status = 'cancelled', reason = 'cancelled by ' || $2,
           finished_at = now(), updated_at = now()
      FROM c
     WHERE r.campaign_id = c.id
       AND r.status IN ('scheduled', 'expanding', 'sending', 'paused', 'over_budget')
    RETURNING r.id
), msgs AS (
    UPDATE messages m SET status = 'cancelled', updated_at = now()
      FROM runs
     WHERE m.run_id = runs.id AND m.status = 'queued'
    RETURNING m.id
)
SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM msgs) AS messages;

-- name: runs_in_progress
SELECT r.id, c.name, r.kind, r.status::text, r.scheduled_for,
       (SELECT coalesce(jsonb_object_agg(s, n), '{}'::jsonb)
          FROM (SELECT status::text AS s, count(*) AS n FROM messages
                 WHERE run_id = r.id GROUP BY status) t) AS counts
  FROM campaign_runs r JOIN campaigns c ON c.id = r.campaign_id
 WHERE r.status IN ('scheduled', 'expanding', 'sending', 'paused')
 ORDER BY r.scheduled_for;

-- name: queue_depth
-- Queued messages per account, and how long the oldest due one has waited.
SELECT account, count(*) AS queued,
       count(*) FILTER (WHERE next_attempt_at <= now()) AS due,
       extract(epoch FROM now() - min(next_attempt_at) FILTER (WHERE next_attempt_at <= now()))
           AS oldest_due_seconds
  FROM messages WHERE status = 'queued'
 GROUP BY account ORDER BY account;

-- name: receipts_pending
SELECT account, count(*) AS pending FROM receipts WHERE applied_at IS NULL
 GROUP BY account ORDER BY account;

-- name: runs_by_status
SELECT status::text, count(*) AS n FROM campaign_runs GROUP BY status;

-- name: active_messages
-- Messages of runs still in progress, by account and status (a metrics gauge).
SELECT m.account, m.status::text, count(*) AS n
  FROM messages m JOIN campaign_runs r ON r.id = m.run_id
 WHERE r.status IN ('expanding', 'sending', 'paused')
 GROUP BY 1, 2;
