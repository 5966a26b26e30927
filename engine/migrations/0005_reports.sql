-- Delivery outcomes for analysts: the views are the SQL interface (documented in the
-- README), so their columns only ever grow.
--
--   campaign_outcomes  one row per run: counts per status, delivery rate, cost, latency
--   message_outcomes   one row per message, with the number masked and unmasked
--   failure_reasons    per run, account, status and error code: how many, and a sample
--
-- Definitions used throughout:
--   accepted       the provider took the message: it has a sent_at, or it is sent,
--                  delivered, read or undelivered (a late receipt can settle a message
--                  whose send result was lost, so sent_at alone would miss a few).
--                  Failed, unknown and expired messages count only with a sent_at.
--   delivery rate  (delivered + read) / accepted
--   cost           the sum of the cost of the accepted messages (what the provider bills)
--   latency        delivered_at - sent_at, over messages that have both

-- --- mask_phone ----------------------------------------------------------------------
-- The same masking as engine.audience.mask (a test holds them equal on many numbers):
-- the country code of a number written with '+' and its last 3 digits are kept, every
-- other digit becomes '*', other characters stay. The country code is the shortest 1-3
-- digit prefix of the digits among the first 5 characters that is a calling code
-- (phonenumbers.COUNTRY_CODE_TO_REGION_CODE, compared as integers, so '07' is 7); the
-- last 3 digits are kept only when more than 3 digits follow the country code. Only
-- ASCII digits count as digits. E.164 numbers take a fast path (~2.5 us a number).

CREATE FUNCTION mask_phone(phone text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    codes  CONSTANT text :=
           ',1,7,20,27,30,31,32,33,34,36,39,40,41,43,44,45,46,47,48,49,51,52,53,54,55,56,57,58,'
        || '60,61,62,63,64,65,66,81,82,84,86,90,91,92,93,94,95,98,211,212,213,216,218,220,221,'
        || '222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,'
        || '243,244,245,246,247,248,249,250,251,252,253,254,255,256,257,258,260,261,262,263,264,'
        || '265,266,267,268,269,290,291,297,298,299,350,351,352,353,354,355,356,357,358,359,370,'
        || '371,372,373,374,375,376,377,378,380,381,382,383,385,386,387,389,420,421,423,500,501,'
        || '502,503,504,505,506,507,508,509,590,591,592,593,594,595,596,597,598,599,670,672,673,'
        || '674,675,676,677,678,679,680,681,682,683,685,686,687,688,689,690,691,692,800,808,850,'
        || '852,853,855,856,870,878,880,881,882,883,886,888,960,961,962,963,964,965,966,967,968,'
        || '970,971,972,973,974,975,976,977,979,992,993,994,995,996,998,';
    e164   CONSTANT boolean := phone ~ '^\+[0-9]*$';
    lead   text := '';   -- up to 3 digits that may hold the country code
    digits int;
    head   int := 0;     -- digits kept at the start
    tail   int;          -- digits kept at the end
    prefix text;
    rest   text;
    suffix text;
BEGIN
    IF e164 THEN
        lead := substr(phone, 2, 3);
        digits := length(phone) - 1;
    ELSE
        IF left(phone, 1) = '+' THEN
            lead := left(regexp_replace(left(phone, 5), '[^0-9]', '', 'g'), 3);
        END IF;
        digits := length(regexp_replace(phone, '[^0-9]', '', 'g'));
    END IF;
    FOR size IN 1 .. length(lead) LOOP
        IF strpos(codes, ',' || ltrim(left(lead, size), '0') || ',') > 0 THEN
            head := size;
            EXIT;
        END IF;
    END LOOP;
    tail := CASE WHEN digits - head > 3 THEN 3 ELSE 0 END;
    IF e164 THEN
        RETURN left(phone, 1 + head) || repeat('*', digits - head - tail) || right(phone, tail);
    END IF;
    -- the raw text of an invalid number: keep the first `head` digits and the last `tail`
    -- digits with whatever surrounds them, and star the digits in between
    prefix := coalesce(substring(phone FROM '^(?:[^0-9]*[0-9]){' || head || '}'), '');
    rest := substr(phone, length(prefix) + 1);
    suffix := coalesce(substring(rest FROM '(?:[0-9][^0-9]*){' || tail || '}$'), '');
    RETURN prefix
        || regexp_replace(left(rest, length(rest) - length(suffix)), '[0-9]', '*', 'g')
        || suffix;
END
$$;

COMMENT ON FUNCTION mask_phone(text) IS
    'A phone number with all but its country code and last 3 digits starred, as in logs';

-- --- indexes -------------------------------------------------------------------------
-- Two, both partial, so most of the dispatcher's writes (queued -> sending -> sent) pay
-- for at most one of them. Status counts use the existing messages_run_status.

-- accepted messages of a run, with what cost, rate and latency need (index-only scans)
CREATE INDEX messages_run_accepted ON messages (run_id) INCLUDE (status, cost, sent_at, delivered_at)
    WHERE sent_at IS NOT NULL OR status IN ('sent', 'delivered', 'read', 'undelivered');

-- why messages were not delivered: grouped counts, and the way to one sample detail
CREATE INDEX messages_run_failures ON messages (run_id, status, account, error_code)
    WHERE status IN ('undelivered', 'failed', 'expired', 'unknown', 'cancelled', 'suppressed',
                     'invalid_number', 'duplicate', 'render_error', 'too_long',
                     'frequency_capped');

-- --- campaign_outcomes ---------------------------------------------------------------
-- One row per run. Each lateral reads one run's messages through an index, so a filter
-- on campaign or run_id reads only those runs.

CREATE VIEW campaign_outcomes AS
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
       ) a;

COMMENT ON VIEW campaign_outcomes IS
    'One row per campaign run: recipients, a count per message status, accepted messages, '
    'delivery rate ((delivered + read) / accepted), cost of the accepted messages, cost per '
    'delivered message, and the median and 95th percentile of seconds from send to delivery';

-- --- message_outcomes ----------------------------------------------------------------

CREATE VIEW message_outcomes AS
SELECT c.id AS campaign_id,
       c.name AS campaign,
       m.run_id,                -- from messages: a filter on it uses their indexes
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
       date_part('epoch', m.delivered_at - m.sent_at) AS delivery_seconds
  FROM messages m
  JOIN campaign_runs r ON r.id = m.run_id
  JOIN campaigns c ON c.id = r.campaign_id;

COMMENT ON VIEW message_outcomes IS
    'One row per message (a recipient of a run): status, provider error, ids, cost and times';

-- --- failure_reasons -----------------------------------------------------------------
-- Every message that was not delivered for a reason: provider failures (undelivered,
-- failed), expired, unknown (ambiguous sends), cancelled, and the skip statuses set at
-- expansion (skipped = true; duplicates are counted on the run, not here).

CREATE VIEW failure_reasons AS
SELECT c.id AS campaign_id,
       c.name AS campaign,
       r.id AS run_id,
       g.account,
       g.status::text AS status,
       g.status IN ('suppressed', 'invalid_number', 'duplicate', 'render_error', 'too_long',
                    'frequency_capped') AS skipped,
       g.error_code,
       g.messages,
       coalesce(
           (SELECT m.error_detail FROM messages m
             WHERE m.run_id = r.id AND m.status = g.status AND m.account = g.account
               AND m.error_code = g.error_code
               AND m.status IN ('undelivered', 'failed', 'expired', 'unknown', 'cancelled',
                                'suppressed', 'invalid_number', 'duplicate', 'render_error',
                                'too_long', 'frequency_capped')
             LIMIT 1),
           (SELECT m.error_detail FROM messages m
             WHERE g.error_code IS NULL
               AND m.run_id = r.id AND m.status = g.status AND m.account = g.account
               AND m.error_code IS NULL
               AND m.status IN ('undelivered', 'failed', 'expired', 'unknown', 'cancelled',
                                'suppressed', 'invalid_number', 'duplicate', 'render_error',
                                'too_long', 'frequency_capped')
             LIMIT 1)) AS sample_detail
  FROM campaign_runs r
  JOIN campaigns c ON c.id = r.campaign_id
 CROSS JOIN LATERAL (
        SELECT m.status, m.account, m.error_code, count(*) AS messages
          FROM messages m
         WHERE m.run_id = r.id
           AND m.status IN ('undelivered', 'failed', 'expired', 'unknown', 'cancelled',
                            'suppressed', 'invalid_number', 'duplicate', 'render_error',
                            'too_long', 'frequency_capped')
         GROUP BY m.status, m.account, m.error_code
       ) g;

COMMENT ON VIEW failure_reasons IS
    'Messages not delivered, counted by run, account, status and error code, with one sample '
    'detail; skipped marks the statuses set at expansion (never sent)';
