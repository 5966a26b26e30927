-- name: archive_campaign
-- Hide the campaign and take away its next firing (the scheduler fires only campaigns
-- with a next_run_at); its status, runs and messages stay as they are.
UPDATE campaigns SET archived_at = now(), next_run_at = NULL, updated_at = now()
 WHERE id = $1 AND archived_at IS NULL
RETURNING archived_at;

-- name: unarchive_campaign
-- Back from the archive with an unchanged file: a campaign that could still fire
-- (active or paused) gets its next firing $2 again; one with none left is finished.
UPDATE campaigns
   SET archived_at = NULL, updated_at = now(),
       next_run_at = CASE WHEN status IN ('active', 'paused') THEN $2::timestamptz END,
       status = CASE WHEN status IN ('active', 'paused') AND $2::timestamptz IS NULL
                     THEN 'finished' ELSE status END
 WHERE id = $1
RETURNING next_run_at;

