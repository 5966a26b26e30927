-- Reports for analysts: `engine report`, `engine export` and the chart page. They read
-- the views of migration 0005 (campaign_outcomes, message_outcomes, failure_reasons) and,
-- for the charts, messages directly through the same indexes.

-- name: report_campaign
-- A campaign by name, with how many runs it has.
SELECT c.id, c.name, (SELECT count(*) FROM campaign_runs r WHERE r.campaign_id = c.id) AS runs
  FROM campaigns c
 WHERE c.name = $1;

-- name: report_run
-- A run and the campaign it belongs to.
SELECT r.id, r.campaign_id, c.name AS campaign
  FROM campaign_runs r
  JOIN campaigns c ON c.id = r.campaign_id
 WHERE r.id = $1;

-- name: report_latest_run_id
-- The run of campaign $1 a report shows by default: its latest, preferring real runs to
-- test sends and runs already due to future ones.
SELECT id FROM campaign_runs
 WHERE campaign_id = $1
 ORDER BY kind = 'test', scheduled_for > now(), scheduled_for DESC, id DESC
 LIMIT 1;

-- name: report_latest_runs
-- The outcome of each campaign's latest run (as report_latest_run_id picks it). The run
-- ids are chosen first, so the view aggregates only those runs.
SELECT o.*
  FROM campaign_outcomes o
 WHERE o.run_id IN (SELECT DISTINCT ON (campaign_id) id
                      FROM campaign_runs
                     ORDER BY campaign_id, kind = 'test', scheduled_for > now(),
                              scheduled_for DESC, id DESC)
 ORDER BY o.campaign;

-- name: report_campaign_runs
-- The outcomes of the latest $2 runs of campaign $1, newest first.
SELECT o.*
  FROM campaign_outcomes o
 WHERE o.run_id IN (SELECT id FROM campaign_runs
                     WHERE campaign_id = $1
                     ORDER BY scheduled_for DESC, id DESC
                     LIMIT $2)
 ORDER BY o.scheduled_for DESC, o.run_id DESC;

-- name: report_run_outcome
SELECT * FROM campaign_outcomes WHERE run_id = $1;

-- name: report_failures
-- The $2 commonest reasons messages of run $1 were not delivered.
SELECT status, account, error_code, messages, skipped, sample_detail
  FROM failure_reasons
 WHERE run_id = $1
 ORDER BY messages DESC, status, account, error_code
 LIMIT $2;

-- name: report_latency
-- Seconds from send to delivery over the run's delivered messages (same rows as the
-- view's median and p95; the WHERE repeats the partial index's predicate so it is used).
SELECT count(*) AS delivered,
       min(t.s) AS min,
       percentile_cont('{0.5,0.9,0.95,0.99}'::float8[]) WITHIN GROUP (ORDER BY t.s) AS p,
       max(t.s) AS max,
       avg(t.s) AS mean
  FROM (SELECT date_part('epoch', m.delivered_at - m.sent_at) AS s
          FROM messages m
         WHERE m.run_id = $1
           AND (m.sent_at IS NOT NULL OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))
           AND m.delivered_at IS NOT NULL AND m.sent_at IS NOT NULL) t;

-- name: report_latency_histogram
-- How many delivered messages of run $1 fall in each latency bin: bin i counts the
-- messages with $2[i] <= seconds < $2[i + 1] (bin 0: below $2[1]; the last: $2[n] and up).
SELECT width_bucket(date_part('epoch', m.delivered_at - m.sent_at), $2::float8[]) AS bin,
       count(*) AS messages
  FROM messages m
 WHERE m.run_id = $1
   AND (m.sent_at IS NOT NULL OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))
   AND m.delivered_at IS NOT NULL AND m.sent_at IS NOT NULL
 GROUP BY 1
 ORDER BY 1;

-- name: report_timeline
-- Sends and receipts of run $1 per minute: when messages were accepted (sent), delivered,
-- read and failed (undelivered, failed or expired). One scan per kind, each through an
-- index that holds only the messages it counts. The page merges minutes into coarser
-- buckets when the run is long, and asks report_timeline_fine when it is short.
SELECT 'sent' AS kind, date_trunc('minute', m.sent_at) AS at, count(*) AS messages
  FROM messages m
 WHERE m.run_id = $1 AND m.sent_at IS NOT NULL
   AND (m.sent_at IS NOT NULL OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))
 GROUP BY 2
UNION ALL
SELECT 'delivered', date_trunc('minute', m.delivered_at), count(*)
  FROM messages m
 WHERE m.run_id = $1 AND m.delivered_at IS NOT NULL
   AND (m.sent_at IS NOT NULL OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))
 GROUP BY 2
UNION ALL
SELECT 'read', date_trunc('minute', m.read_at), count(*)
  FROM messages m
 WHERE m.run_id = $1 AND m.status = 'read' AND m.read_at IS NOT NULL
 GROUP BY 2
UNION ALL
SELECT 'failed', date_trunc('minute', m.failed_at), count(*)
  FROM messages m
 WHERE m.run_id = $1 AND m.status IN ('undelivered', 'failed', 'expired')
   AND m.failed_at IS NOT NULL
 GROUP BY 2;

-- name: report_timeline_fine
-- report_timeline in buckets of $2 (a few seconds) counted from $3, for a run whose
-- events span too few minutes to draw per minute.
SELECT 'sent' AS kind, date_bin($2::interval, m.sent_at, $3) AS at, count(*) AS messages
  FROM messages m
 WHERE m.run_id = $1 AND m.sent_at IS NOT NULL
   AND (m.sent_at IS NOT NULL OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))
 GROUP BY 2
UNION ALL
SELECT 'delivered', date_bin($2::interval, m.delivered_at, $3), count(*)
  FROM messages m
 WHERE m.run_id = $1 AND m.delivered_at IS NOT NULL
   AND (m.sent_at IS NOT NULL OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))
 GROUP BY 2
UNION ALL
SELECT 'read', date_bin($2::interval, m.read_at, $3), count(*)
  FROM messages m
 WHERE m.run_id = $1 AND m.status = 'read' AND m.read_at IS NOT NULL
 GROUP BY 2
UNION ALL
SELECT 'failed', date_bin($2::interval, m.failed_at, $3), count(*)
  FROM messages m
 WHERE m.run_id = $1 AND m.status IN ('undelivered', 'failed', 'expired')
   AND m.failed_at IS NOT NULL
 GROUP BY 2;

-- name: report_accepted
-- Run $1's accepted messages (as the views count them) by status and channel; with the
-- view's counts per status, the funnel's steps and what each one lost (the channel says
-- whether a read step exists).
SELECT m.status::text AS status, m.channel, count(*) AS messages
  FROM messages m
 WHERE m.run_id = $1
   AND (m.sent_at IS NOT NULL OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))
 GROUP BY 1, 2;

-- name: report_campaign_run_ids
-- Every run of campaign $1, oldest first (what `engine export` writes without --run).
SELECT id FROM campaign_runs WHERE campaign_id = $1 ORDER BY scheduled_for, id;

-- name: export_messages
-- One CSV row per message of runs $1, by run then number (the order of an index, so
-- nothing is sorted). Columns are message_outcomes' in a reading order. The columns that
-- carry text from outside the engine (a provider's codes, details and ids, a contact's
-- locale) go through regexp_replace($2, $3): engine.untrusted's formula rule and prefix,
-- or an empty prefix for --raw. variant, first_clicked_at and clicks (by people, on the
-- message's tracked links) come last (issue 22).
SELECT campaign, run_id, run_kind, scheduled_for, message_id, contact_id, phone, phone_masked,
       channel, account, status,
       regexp_replace(error_code, $2, $3) AS error_code,
       regexp_replace(error_detail, $2, $3) AS error_detail,
       regexp_replace(provider_message_id, $2, $3) AS provider_message_id,
       regexp_replace(locale, $2, $3) AS locale,
       encoding, segments, cost, attempts, created_at, sent_at, delivered_at, read_at,
       failed_at, delivery_seconds, variant, first_clicked_at, clicks
  FROM message_outcomes
 WHERE run_id = ANY ($1::bigint[])
 ORDER BY run_id, phone;

-- name: export_messages_masked
-- export_messages with the numbers masked (no phone column).
SELECT campaign, run_id, run_kind, scheduled_for, message_id, contact_id, phone_masked,
       channel, account, status,
       regexp_replace(error_code, $2, $3) AS error_code,
       regexp_replace(error_detail, $2, $3) AS error_detail,
       regexp_replace(provider_message_id, $2, $3) AS provider_message_id,
       regexp_replace(locale, $2, $3) AS locale,
       encoding, segments, cost, attempts, created_at, sent_at, delivered_at, read_at,
       failed_at, delivery_seconds, variant, first_clicked_at, clicks
  FROM message_outcomes
 WHERE run_id = ANY ($1::bigint[])
 ORDER BY run_id, phone;

-- name: report_accounts
-- Run $1 by the account that carried each message (or last tried it, when none accepted
-- it): messages to send (skip statuses left out), accepted, delivered, undelivered,
-- failed, unknown, still pending, rerouted (handed to more than one account) and the cost
-- of the accepted ones (what that provider bills; accepted as in campaign_outcomes: a
-- sent_at, or an accepted status). One row per account.
SELECT account,
       count(*) AS messages,
       count(*) FILTER (WHERE sent_at IS NOT NULL
                           OR status IN ('sent', 'delivered', 'read', 'undelivered')) AS accepted,
       count(*) FILTER (WHERE status IN ('delivered', 'read')) AS delivered,
       count(*) FILTER (WHERE status = 'undelivered') AS undelivered,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'unknown') AS unknown,
       count(*) FILTER (WHERE status IN ('queued', 'sending')) AS pending,
       count(*) FILTER (WHERE cardinality(tried_accounts) > 1) AS rerouted,
       coalesce(sum(cost) FILTER (WHERE sent_at IS NOT NULL
                                     OR status IN ('sent', 'delivered', 'read', 'undelivered')),
                0) AS cost
  FROM messages
 WHERE run_id = $1
   AND status NOT IN ('suppressed', 'invalid_number', 'duplicate', 'render_error', 'too_long',
                      'frequency_capped')
 GROUP BY account
 ORDER BY account;
