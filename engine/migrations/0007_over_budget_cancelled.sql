-- Runs stopped by the budget gate used to leave their messages 'queued' for ever (shown
-- as due, counted by engine_oldest_due_seconds). Since this version the gate cancels them
-- with the error code 'over_budget' (`engine campaign resume` re-queues them); this does
-- the same for the runs already stopped.
UPDATE messages m
   SET status = 'cancelled', error_code = 'over_budget', error_detail = r.reason,
       updated_at = now()
  FROM campaign_runs r
 WHERE r.status = 'over_budget' AND m.run_id = r.id AND m.status = 'queued';

UPDATE campaign_runs
   SET counts = (counts - 'queued')
                || jsonb_build_object('cancelled', coalesce((counts ->> 'queued')::bigint, 0)
                                                   + coalesce((counts ->> 'cancelled')::bigint, 0))
 WHERE status = 'over_budget' AND counts ? 'queued';
