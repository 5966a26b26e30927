-- name: due_campaigns
-- Active campaigns whose next firing is due, locked so that two schedulers never
-- create the same runs (the other skips them).
SELECT id, name, spec, next_run_at
  FROM campaigns
 WHERE status = 'active' AND next_run_at <= $1
 ORDER BY next_run_at
   FOR UPDATE SKIP LOCKED;

-- name: insert_run
-- One firing of a campaign; unique per (campaign, scheduled_for), so a repeated tick
-- creates nothing.
INSERT INTO campaign_runs (campaign_id, scheduled_for, kind, status, reason, spec)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (campaign_id, scheduled_for) DO NOTHING
RETURNING id;

-- name: set_next_run
-- After a firing: the next one, or finished when there is none.
UPDATE campaigns
   SET next_run_at = $2,
       status = CASE WHEN $2::timestamptz IS NULL THEN 'finished'::campaign_status ELSE status END,
       updated_at = now()
 WHERE id = $1;

-- name: claim_run
-- The oldest due run waiting for expansion. SKIP LOCKED: concurrent schedulers each
-- get a different run (or none). Runs left in 'expanding' by a dead expander are taken
-- over by the advisory-lock check in Python, not here.
SELECT r.id
  FROM campaign_runs r
 WHERE r.status = 'scheduled' AND r.scheduled_for <= $1
 ORDER BY r.scheduled_for
 LIMIT 1
   FOR UPDATE SKIP LOCKED;

-- name: orphaned_expansions
-- Runs in 'expanding': each is either being expanded (its expander holds the run's
-- advisory lock) or was interrupted (nobody does), in which case it is resumed.
SELECT id FROM campaign_runs WHERE status = 'expanding' ORDER BY scheduled_for;

-- name: mark_expanding
UPDATE campaign_runs
   SET status = 'expanding', claimed_by = $2, started_at = coalesce(started_at, now()),
       updated_at = now()
 WHERE id = $1;

-- name: run_for_expansion
-- Everything the expander needs about one run.
SELECT r.id, r.campaign_id, r.scheduled_for, r.kind, r.spec, r.checkpoint, c.name
  FROM campaign_runs r JOIN campaigns c ON c.id = r.campaign_id
 WHERE r.id = $1;

-- name: complete_runs
-- Runs in 'sending' with nothing left to learn: every message final, or sent (or
-- unknown) longer ago than the receipt window $1, or sent and past its last status
-- lookup (``next_poll_at`` 'infinity': a provider without delivery receipts, polled until
-- the campaign's validity ended). Their per-status counts replace the
-- expansion-time ones; tallies with no message row (duplicates) are kept.
-- Two NOT EXISTS, each naming the statuses it looks for, so that each is a range of the
-- (run_id, status) index: with the OR inside one, the planner read every index entry of
-- the run (live and dead: 2M at N = 1M, 0.2 s per pass).
WITH done AS (
    SELECT r.id FROM campaign_runs r
     WHERE r.status = 'sending'
       AND NOT EXISTS (SELECT 1 FROM messages m
                        WHERE m.run_id = r.id AND m.status IN ('queued', 'sending'))
       AND NOT EXISTS (SELECT 1 FROM messages m
                        WHERE m.run_id = r.id AND m.status IN ('sent', 'unknown')
                          AND coalesce(m.sent_at, m.updated_at) > now() - $1::interval
                          AND m.next_poll_at IS DISTINCT FROM 'infinity')
       -- an A/B test whose winner is not chosen yet still has the rest to send
       AND NOT EXISTS (SELECT 1 FROM ab_tests t WHERE t.run_id = r.id AND t.decided_at IS NULL)
       FOR UPDATE SKIP LOCKED
), tally AS (
    SELECT t.run_id, jsonb_object_agg(t.status, t.n) AS counts
      FROM (SELECT m.run_id, m.status::text AS status, count(*) AS n
              FROM messages m JOIN done ON done.id = m.run_id
             GROUP BY 1, 2) t
     GROUP BY t.run_id
)
UPDATE campaign_runs r
   SET status = 'completed',
       counts = (r.counts - ARRAY(SELECT s::text FROM unnest(enum_range(NULL::message_status)) s
                                   WHERE s <> 'duplicate'))
                || coalesce(t.counts, '{}'::jsonb),
       finished_at = now(),
       updated_at = now()
  FROM done LEFT JOIN tally t ON t.run_id = done.id
 WHERE r.id = done.id
RETURNING r.id;
