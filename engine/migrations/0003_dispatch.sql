-- The dispatcher claims per run (so pausing a run is one row update and a run's own
-- rate applies to it alone): queued messages of one run in next_attempt_at order.
CREATE INDEX messages_run_claim ON messages (run_id, next_attempt_at) WHERE status = 'queued';
DROP INDEX messages_claim;
