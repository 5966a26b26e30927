-- name: prunable_runs
-- Runs that ended (completed, cancelled, missed, failed: never one that can still send,
-- paused or over budget) before $1, and still hold messages or have not been summarised
-- (a prune stopped half-way is finished by the next). Oldest first.
SELECT r.id, r.pruned_at IS NOT NULL AS summarised
  FROM campaign_runs r
 WHERE r.status IN ('completed', 'cancelled', 'missed', 'failed')
   AND coalesce(r.finished_at, r.updated_at) < $1
   AND (r.pruned_at IS NULL OR EXISTS (SELECT 1 FROM messages m WHERE m.run_id = r.id))
 ORDER BY coalesce(r.finished_at, r.updated_at), r.id;

-- name: summarise_run
-- Keep what campaign_outcomes says of run $1 (computed from its messages), then mark it pruned: from then on the view
-- reads the run from run_summaries. One statement, so the two cannot part.
WITH kept AS (
    INSERT INTO run_summaries
    SELECT o.run_id, o.recipients, o.queued, o.sending, o.sent, o.delivered, o.read,
           o.undelivered, o.failed, o.expired, o.unknown, o.cancelled, o.suppressed,
           o.invalid_number, o.duplicate, o.render_error, o.too_long, o.frequency_capped,
           o.accepted, o.delivery_rate, o.cost, o.cost_per_delivered,
           o.median_delivery_seconds, o.p95_delivery_seconds
      FROM run_outcomes_from_messages o
     WHERE o.run_id = $1
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id
)
UPDATE campaign_runs SET pruned_at = now()
 WHERE id = $1 AND pruned_at IS NULL AND EXISTS (SELECT 1 FROM kept);

-- name: prune_messages
-- Up to $2 messages of pruned run $1, through the (run_id, status) index: one short
-- transaction per batch, so sending never waits long behind a prune.
DELETE FROM messages
 WHERE id IN (SELECT id FROM messages WHERE run_id = $1 LIMIT $2);

-- name: prune_receipts
-- Up to $3 settled receipts received before $1, after receipt id $2 (keyset: each batch
-- starts where the last ended, so dead rows are not scanned again). Receipt ids follow
-- arrival, so the batches walk the log from its oldest end. Returns the ids it deleted.
DELETE FROM receipts
 WHERE id IN (SELECT id FROM receipts
               WHERE id > $2 AND received_at < $1 AND applied_at IS NOT NULL
               ORDER BY id LIMIT $3)
RETURNING id;

-- name: prune_rejected_webhooks
-- Refused webhook calls received before $1 (a small table: one statement).
DELETE FROM rejected_webhooks WHERE received_at < $1;

-- name: count_prunable
-- What a prune before $1 would delete, for --dry-run: the runs' messages, and the
-- settled receipts and refused calls received before it.
SELECT (SELECT count(*) FROM messages m
          JOIN campaign_runs r ON r.id = m.run_id
         WHERE r.status IN ('completed', 'cancelled', 'missed', 'failed')
           AND coalesce(r.finished_at, r.updated_at) < $1) AS messages,
       (SELECT count(*) FROM receipts
         WHERE received_at < $1 AND applied_at IS NOT NULL) AS receipts,
       (SELECT count(*) FROM rejected_webhooks WHERE received_at < $1) AS rejected;
