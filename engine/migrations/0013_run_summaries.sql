-- Retention (issue 20): `engine db prune --older-than 90d` drops the messages and receipts
-- of runs that finished before the cutoff, and keeps what campaign_outcomes said of them.
--
-- Before a run's rows go, its campaign_outcomes row is copied into run_summaries and the
-- run is marked pruned_at; campaign_outcomes then reads pruned runs from run_summaries and
-- the others from their messages, as before, so its history survives every prune. What
-- does not survive is per message: message_outcomes, failure_reasons and the message and
-- receipt tables hold nothing for a pruned run.
ALTER TABLE campaign_runs ADD COLUMN pruned_at timestamptz;

CREATE TABLE run_summaries (
    run_id                   bigint PRIMARY KEY REFERENCES campaign_runs (id) ON DELETE CASCADE,
    recipients               bigint,
    queued                   bigint NOT NULL,
    sending                  bigint NOT NULL,
    sent                     bigint NOT NULL,
    delivered                bigint NOT NULL,
    read                     bigint NOT NULL,
    undelivered              bigint NOT NULL,
    failed                   bigint NOT NULL,
    expired                  bigint NOT NULL,
    unknown                  bigint NOT NULL,
    cancelled                bigint NOT NULL,
    suppressed               bigint NOT NULL,
    invalid_number           bigint NOT NULL,
    duplicate                bigint,
    render_error             bigint NOT NULL,
    too_long                 bigint NOT NULL,
    frequency_capped         bigint NOT NULL,
    accepted                 bigint NOT NULL,
    delivery_rate            numeric,
    cost                     numeric,
    cost_per_delivered       numeric,
    median_delivery_seconds  double precision,
    p95_delivery_seconds     double precision
);

-- the same columns as migration 0005's view, in the same order
CREATE OR REPLACE VIEW campaign_outcomes AS
SELECT c.id AS campaign_id,
       c.name AS campaign,
       r.id AS run_id,
       r.kind,
       r.status::text AS run_status,
       r.scheduled_for,
       r.started_at,
       r.finished_at,
       coalesce(r.recipients, n.total - n.duplicate) AS recipients,
       n.queued, n.sending, n.sent, n.delivered, n.read, n.undelivered, n.failed, n.expired,
       n.unknown, n.cancelled, n.suppressed, n.invalid_number,
       -- duplicates have no message rows: the expander counts them on the run
       coalesce((r.counts ->> 'duplicate')::bigint, n.duplicate) AS duplicate,
       n.render_error, n.too_long, n.frequency_capped,
       a.accepted,
       round((n.delivered + n.read)::numeric / nullif(a.accepted, 0), 4) AS delivery_rate,
       r.estimated_cost,
       a.cost,
       round(a.cost / nullif(n.delivered + n.read, 0), 4) AS cost_per_delivered,
       a.latency[1] AS median_delivery_seconds,
       a.latency[2] AS p95_delivery_seconds
  FROM campaign_runs r
  JOIN campaigns c ON c.id = r.campaign_id
 CROSS JOIN LATERAL (
        SELECT coalesce(sum(t.n), 0)::bigint AS total,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'queued'), 0)::bigint AS queued,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'sending'), 0)::bigint AS sending,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'sent'), 0)::bigint AS sent,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'delivered'), 0)::bigint AS delivered,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'read'), 0)::bigint AS read,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'undelivered'), 0)::bigint AS undelivered,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'failed'), 0)::bigint AS failed,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'expired'), 0)::bigint AS expired,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'unknown'), 0)::bigint AS unknown,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'cancelled'), 0)::bigint AS cancelled,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'suppressed'), 0)::bigint AS suppressed,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'invalid_number'), 0)::bigint
                   AS invalid_number,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'duplicate'), 0)::bigint AS duplicate,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'render_error'), 0)::bigint AS render_error,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'too_long'), 0)::bigint AS too_long,
               coalesce(sum(t.n) FILTER (WHERE t.s = 'frequency_capped'), 0)::bigint
                   AS frequency_capped
          FROM (SELECT m.status AS s, count(*) AS n
                  FROM messages m
                 WHERE m.run_id = r.id
                 GROUP BY m.status) t
       ) n
 CROSS JOIN LATERAL (
        SELECT count(*) AS accepted,
               coalesce(sum(m.cost), 0) AS cost,
               -- one sort for both percentiles; date_part is float8 (extract is numeric,
               -- and slower to sort by a third)
               percentile_cont('{0.5,0.95}'::float8[]) WITHIN GROUP (
                   ORDER BY date_part('epoch', m.delivered_at - m.sent_at))
                   FILTER (WHERE m.delivered_at IS NOT NULL AND m.sent_at IS NOT NULL)
                   AS latency
          FROM messages m
         WHERE m.run_id = r.id
           AND (m.sent_at IS NOT NULL OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))
       ) a
 WHERE r.pruned_at IS NULL
UNION ALL
SELECT c.id, c.name, r.id, r.kind, r.status::text, r.scheduled_for, r.started_at,
       r.finished_at, s.recipients,
       s.queued, s.sending, s.sent, s.delivered, s.read, s.undelivered, s.failed, s.expired,
       s.unknown, s.cancelled, s.suppressed, s.invalid_number, s.duplicate,
       s.render_error, s.too_long, s.frequency_capped,
       s.accepted, s.delivery_rate, r.estimated_cost, s.cost, s.cost_per_delivered,
       s.median_delivery_seconds, s.p95_delivery_seconds
  FROM campaign_runs r
  JOIN campaigns c ON c.id = r.campaign_id
  JOIN run_summaries s ON s.run_id = r.id
 WHERE r.pruned_at IS NOT NULL;
