-- Tracked short links, their clicks, and A/B variants (issue 22).
--
--   link_codes      one row per link of a message: the short code and where it leads
--                   (written by COPY with the messages, in the same transaction)
--   link_clicks     one row per request of /l/{code}: a person ('human') or a link-preview
--                   bot ('bot', not counted as a click); written in batches by the daemon
--   ab_tests        one row per run of a campaign with message.winner: when the winner is
--                   due, which variant won, on what figures, and how it was chosen
--   messages.variant  the A/B variant each recipient got (NULL without variants)
--
-- Views (columns only ever grow):
--   link_outcomes     per run, variant and link: messages, delivered, unique clickers,
--                     clicks, click-through rate, seconds from delivery to first click
--   variant_outcomes  per run and variant: recipients, accepted, delivered, delivery rate,
--                     clickers, clicks, click-through rate, cost
-- Definitions: delivered = status delivered or read; a clicker is a message (recipient)
-- with at least one human click; click-through rate = clickers / delivered.

ALTER TABLE messages ADD COLUMN variant text;

CREATE TABLE link_codes (
    code     text PRIMARY KEY,              -- base62, from a CSPRNG, unique across runs
    run_id   bigint NOT NULL REFERENCES campaign_runs (id) ON DELETE CASCADE,
    phone    text NOT NULL,                 -- with run_id: the message (UNIQUE (run_id, phone))
    link_no  smallint NOT NULL,             -- 1 for the message's first link, 2, ...
    url      text NOT NULL                  -- the target, with the campaign's UTM parameters
);
CREATE INDEX link_codes_message ON link_codes (run_id, phone);

CREATE TABLE link_clicks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL,
    run_id      bigint NOT NULL,
    message_id  bigint,
    clicked_at  timestamptz NOT NULL,
    agent       text NOT NULL CHECK (agent IN ('human', 'bot'))
);
CREATE INDEX link_clicks_code ON link_clicks (code, clicked_at);
CREATE INDEX link_clicks_message ON link_clicks (message_id) WHERE agent = 'human';
CREATE INDEX link_clicks_run ON link_clicks (run_id);

CREATE TABLE ab_tests (
    run_id      bigint PRIMARY KEY REFERENCES campaign_runs (id) ON DELETE CASCADE,
    by          text NOT NULL CHECK (by IN ('clicks', 'delivered')),
    test_share  numeric(5, 4) NOT NULL,
    decide_at   timestamptz NOT NULL,        -- the test's start + winner.after
    decided_at  timestamptz,
    winner      text,
    figures     jsonb                        -- per variant: the figures the choice used
);
CREATE INDEX ab_tests_due ON ab_tests (decide_at) WHERE decided_at IS NULL;

-- --- per message: clicks ---------------------------------------------------------------

CREATE VIEW message_clicks AS
SELECT k.message_id,
       k.run_id,
       count(*) AS clicks,
       min(k.clicked_at) AS first_clicked_at
  FROM link_clicks k
 WHERE k.agent = 'human' AND k.message_id IS NOT NULL
 GROUP BY k.message_id, k.run_id;

COMMENT ON VIEW message_clicks IS
    'Per message with at least one click by a person: clicks and the first click''s time';

-- --- message_outcomes grows: variant, clicks, first_clicked_at ----------------------------

CREATE OR REPLACE VIEW message_outcomes AS
SELECT c.id AS campaign_id,
       c.name AS campaign,
       m.run_id,
       r.kind AS run_kind,
       r.scheduled_for,
       m.id AS message_id,
       m.contact_id,
       mask_phone(m.phone) AS phone_masked,
       m.phone,
       m.channel,
       m.account,
       m.status::text AS status,
       m.error_code,
       m.error_detail,
       m.provider_message_id,
       m.locale,
       m.encoding,
       m.segments,
       m.cost,
       m.attempts,
       m.created_at,
       m.sent_at,
       m.delivered_at,
       m.read_at,
       m.failed_at,
       date_part('epoch', m.delivered_at - m.sent_at) AS delivery_seconds,
       m.variant,
       k.clicks,
       k.first_clicked_at
  FROM messages m
  JOIN campaign_runs r ON r.id = m.run_id
  JOIN campaigns c ON c.id = r.campaign_id
 CROSS JOIN LATERAL (
        SELECT count(*) AS clicks, min(x.clicked_at) AS first_clicked_at
          FROM link_clicks x
         WHERE x.message_id = m.id AND x.agent = 'human'
       ) k;

COMMENT ON VIEW message_outcomes IS
    'One row per message (a recipient of a run): status, provider error, ids, cost and times; '
    'its A/B variant, clicks by people on its tracked links and the first one''s time';

-- --- link_outcomes ---------------------------------------------------------------------

CREATE VIEW link_outcomes AS
SELECT c.id AS campaign_id,
       c.name AS campaign,
       r.id AS run_id,
       o.variant,
       o.link,
       o.messages,
       o.delivered,
       o.unique_clickers,
       o.clicks,
       o.bot_clicks,
       round(o.unique_clickers::numeric / nullif(o.delivered, 0), 4) AS click_through_rate,
       o.first_click[1] AS median_seconds_to_click,
       o.first_click[2] AS p95_seconds_to_click
  FROM campaign_runs r
  JOIN campaigns c ON c.id = r.campaign_id
 CROSS JOIN LATERAL (
        SELECT m.variant,
               l.url AS link,
               count(DISTINCT m.id) AS messages,
               count(DISTINCT m.id) FILTER (WHERE m.status IN ('delivered', 'read')) AS delivered,
               count(DISTINCT m.id) FILTER (WHERE k.clicks > 0) AS unique_clickers,
               coalesce(sum(k.clicks), 0)::bigint AS clicks,
               coalesce(sum(k.bots), 0)::bigint AS bot_clicks,
               percentile_cont('{0.5,0.95}'::float8[]) WITHIN GROUP (
                   ORDER BY date_part('epoch', k.first_click - m.delivered_at))
                   FILTER (WHERE k.first_click IS NOT NULL AND m.delivered_at IS NOT NULL)
                   AS first_click
          FROM link_codes l
          JOIN messages m ON m.run_id = l.run_id AND m.phone = l.phone
          LEFT JOIN LATERAL (
                SELECT count(*) FILTER (WHERE x.agent = 'human') AS clicks,
                       count(*) FILTER (WHERE x.agent = 'bot') AS bots,
                       min(x.clicked_at) FILTER (WHERE x.agent = 'human') AS first_click
                  FROM link_clicks x
                 WHERE x.code = l.code
               ) k ON true
         WHERE l.run_id = r.id
         GROUP BY m.variant, l.url
       ) o;

COMMENT ON VIEW link_outcomes IS
    'Per run, variant and link: messages carrying it, delivered, unique clickers, clicks by '
    'people, clicks by link-preview bots, click-through rate (unique clickers / delivered), '
    'median and 95th percentile seconds from delivery to first click';

-- --- variant_outcomes ------------------------------------------------------------------

CREATE VIEW variant_outcomes AS
SELECT c.id AS campaign_id,
       c.name AS campaign,
       r.id AS run_id,
       v.variant,
       v.recipients,
       v.accepted,
       v.delivered,
       round(v.delivered::numeric / nullif(v.accepted, 0), 4) AS delivery_rate,
       v.clickers,
       v.clicks,
       round(v.clickers::numeric / nullif(v.delivered, 0), 4) AS click_through_rate,
       v.cost
  FROM campaign_runs r
  JOIN campaigns c ON c.id = r.campaign_id
 CROSS JOIN LATERAL (
        SELECT m.variant,
               count(*) AS recipients,
               count(*) FILTER (WHERE m.sent_at IS NOT NULL
                                   OR m.status IN ('sent', 'delivered', 'read', 'undelivered'))
                   AS accepted,
               count(*) FILTER (WHERE m.status IN ('delivered', 'read')) AS delivered,
               count(mc.message_id) AS clickers,
               coalesce(sum(mc.clicks), 0)::bigint AS clicks,
               coalesce(sum(m.cost) FILTER (WHERE m.sent_at IS NOT NULL
                   OR m.status IN ('sent', 'delivered', 'read', 'undelivered')), 0) AS cost
          FROM messages m
          -- this run's clicks only (link_clicks_run), grouped once, then joined
          LEFT JOIN (SELECT x.message_id, count(*) AS clicks
                       FROM link_clicks x
                      WHERE x.run_id = r.id AND x.agent = 'human'
                      GROUP BY x.message_id) mc ON mc.message_id = m.id
         WHERE m.run_id = r.id AND m.variant IS NOT NULL
         GROUP BY m.variant
       ) v;

COMMENT ON VIEW variant_outcomes IS
    'Per run and A/B variant: recipients, accepted, delivered, delivery rate, clickers '
    '(recipients with a click by a person), clicks, click-through rate (clickers / '
    'delivered), cost of the accepted messages';
