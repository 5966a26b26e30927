-- Queries of `engine demo` (engine/demo.py): it starts afresh, then watches its one run.

-- name: demo_drop_schema
-- A directory of an earlier demo (checked to be the demo's own): start again from nothing.
DROP SCHEMA public CASCADE;

-- name: demo_create_schema
CREATE SCHEMA public;

-- name: demo_first_contacts
-- The first $1 contacts imported; the demo opts some of them out before the campaign.
SELECT phone FROM contacts ORDER BY id LIMIT $1;

-- name: demo_run_started
-- The demo campaign's run once the daemon has expanded it.
SELECT r.id
  FROM campaign_runs r JOIN campaigns c ON c.id = r.campaign_id
 WHERE c.name = $1 AND r.status IN ('sending', 'completed');

-- name: demo_sent_phone
-- A number the run has reached, to answer STOP from.
SELECT phone FROM messages WHERE run_id = $1 AND status IN ('sent', 'delivered') LIMIT 1;

-- name: demo_status_counts
-- Messages of the run per status, for the live progress line.
SELECT status::text, count(*) AS n FROM messages WHERE run_id = $1 GROUP BY 1 ORDER BY 1;

-- name: demo_outcome_statuses
-- Messages of the run per status, most first, with an error code seen in each.
SELECT status::text, count(*) AS n, max(error_code) AS code
  FROM messages WHERE run_id = $1 GROUP BY 1 ORDER BY 2 DESC;

-- name: demo_outcome
-- The run's figures as the reports define them (the view campaign_outcomes).
SELECT recipients, delivered + read AS delivered, accepted, cost,
       median_delivery_seconds AS p50, p95_delivery_seconds AS p95
  FROM campaign_outcomes WHERE run_id = $1;

-- name: demo_stopped_by_reply
-- Numbers opted out by a STOP reply (webhooks record the source as sms-reply:<account>).
SELECT count(*) FROM suppressions WHERE source LIKE 'sms-reply:%';

-- name: demo_waiting_for_winner
-- Whether run $1 still has an A/B winner to choose, or the rest of its audience to
-- expand (the progress goes on although every message so far is final).
SELECT EXISTS (SELECT 1 FROM ab_tests WHERE run_id = $1 AND decided_at IS NULL)
    OR EXISTS (SELECT 1 FROM campaign_runs
                WHERE id = $1 AND status IN ('scheduled', 'expanding'));

-- name: demo_winner_decided
-- Whether the run's A/B winner has been chosen (the rest of the audience is then sent).
SELECT EXISTS (SELECT 1 FROM ab_tests WHERE run_id = $1 AND decided_at IS NOT NULL);
