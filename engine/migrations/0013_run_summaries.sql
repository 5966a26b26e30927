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

-- Migration 0005's view keeps computing every run from its messages, under a new name;
-- campaign_outcomes (the same columns, in the same order) reads a run from it until the
-- run is pruned, and from run_summaries after.
ALTER VIEW campaign_outcomes RENAME TO run_outcomes_from_messages;

CREATE VIEW campaign_outcomes AS
SELECT o.*
  FROM run_outcomes_from_messages o
  JOIN campaign_runs r ON r.id = o.run_id
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

COMMENT ON VIEW campaign_outcomes IS
    'One row per campaign run: recipients, a count per message status, accepted messages, '
    'delivery rate ((delivered + read) / accepted), cost of the accepted messages, cost per '
    'delivered message, and the median and 95th percentile of seconds from send to delivery '
    '(a pruned run''s as they stood when it was pruned)';
