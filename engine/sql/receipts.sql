-- name: db_now
-- The database's clock, so that a pass of the reconciler or the poller skips what it
-- postponed itself (whatever the skew between this machine and the server).
SELECT now();

-- name: insert_receipts
-- Receipts as they arrived, many per statement (the writer's group commit, or a poll),
-- from source $14. An event stored before (same account and provider event id) is
-- skipped, so a retried webhook changes nothing. A receipt flagged rejected ($13: an event
-- the adapter could not read) is stored settled, outcome 'rejected': the reconciler never
-- looks at it. $12 flags the provider's opt-out codes (see settle_receipts). Returns how
-- many were new.
WITH new AS (
    INSERT INTO receipts (account, provider_message_id, message_id, provider_event_id, status,
                          provider_status, error_code, error_detail, part, occurred_at, raw,
                          opt_out, applied_at, outcome, source)
    SELECT r.account, r.provider_id, r.message_id, r.event_id, r.status::message_status,
           r.provider_status, r.code, r.detail, r.part, r.occurred_at, r.raw::jsonb,
           r.opt_out, CASE WHEN r.rejected THEN now() END,
           CASE WHEN r.rejected THEN 'rejected' END, $14
      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::text[], $9::smallint[], $10::timestamptz[], $11::text[],
                  $12::boolean[], $13::boolean[])
           AS r(account, provider_id, message_id, event_id, status, provider_status, code,
                detail, part, occurred_at, raw, opt_out, rejected)
    ON CONFLICT (account, provider_event_id) WHERE provider_event_id IS NOT NULL DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM new;

-- name: insert_inbound
-- Replies and opt-in/out notices (body NULL), then what they do to suppressions: an
-- opt-out suppresses the number on its channel; an opt-in reply lifts the opt-outs the
-- recipient made themselves on that channel or all ('sms-reply:*' and 'webhook:*'
-- sources), never an operator's suppression; an opt-in notice (a provider's unblock)
-- lifts only the suppression that provider account's own block notice created
-- ('webhook:<account>'), not a STOP reply's nor another account's. Only events stored for the first time act,
-- so a retried webhook cannot undo a later change; of several changes to one number in a
-- batch the last one wins (ids follow the input order).
WITH new AS (
    INSERT INTO inbound_messages (account, phone, channel, body, provider_message_id,
                                  in_reply_to, action, raw)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::text[]::jsonb[])
    ON CONFLICT (account, provider_message_id) WHERE provider_message_id IS NOT NULL DO NOTHING
    RETURNING id, account, phone, channel, body, action
), last AS (
    SELECT DISTINCT ON (phone, channel) phone, channel, action, account, body
      FROM new
     WHERE action IN ('opt_out', 'opt_in')
     ORDER BY phone, channel, id DESC
), stopped AS (
    INSERT INTO suppressions (phone, channel, reason, source)
    SELECT phone, channel,
           CASE WHEN body IS NULL THEN 'opted out through the provider'
                ELSE 'replied ' || left(body, 40) END,
           CASE WHEN body IS NULL THEN 'webhook:' ELSE 'sms-reply:' END || account
      FROM last
     WHERE action = 'opt_out'
    ON CONFLICT (phone, channel) DO NOTHING
    RETURNING 1
), started AS (
    DELETE FROM suppressions s
     USING last l
     WHERE l.action = 'opt_in' AND s.phone = l.phone AND s.channel IN (l.channel, '*')
       AND CASE WHEN l.body IS NULL THEN s.source = 'webhook:' || l.account
                ELSE s.source LIKE 'sms-reply:%' OR s.source LIKE 'webhook:%' END
    RETURNING 1
)
SELECT (SELECT count(*) FROM new) AS stored,
       (SELECT count(*) FROM stopped) AS suppressed,
       (SELECT count(*) FROM started) AS lifted;

-- name: give_up_receipts
-- Receipts pending for longer than $1 (no message ever matched, or its send result never
-- landed) are settled as 'unmatched': kept in the log, no longer looked at.
UPDATE receipts SET applied_at = now(), outcome = 'unmatched'
 WHERE applied_at IS NULL AND received_at < now() - $1::interval;

-- name: due_receipts
-- Up to $2 pending receipts whose next look is due by $1 (the start of this pass), locked
-- so that a concurrent reconciler takes others, each with the message it reports on:
-- matched on the provider's id, else on our id where the provider echoed it (same
-- account either way). ``at`` is the provider's time of the event, unless it claims a
-- time after we received it or more than 30 days before.
WITH due AS (
    SELECT id FROM receipts
     WHERE applied_at IS NULL AND retry_at <= $1
     ORDER BY retry_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
SELECT r.id, r.account, r.status::text AS status, r.part, r.error_code, r.error_detail,
       r.provider_message_id,
       CASE WHEN r.occurred_at BETWEEN r.received_at - interval '30 days' AND r.received_at
            THEN r.occurred_at ELSE r.received_at END AS at,
       m.id AS message_id, m.status::text AS message_status, m.segments,
       m.provider_message_id AS message_provider_id
  FROM due JOIN receipts r USING (id)
  LEFT JOIN LATERAL (
        (SELECT id, status, segments, provider_message_id FROM messages
          WHERE account = r.account AND provider_message_id = r.provider_message_id)
        UNION ALL
        (SELECT id, status, segments, provider_message_id FROM messages
          WHERE id = r.message_id AND account = r.account)
        LIMIT 1
  ) m ON true
 ORDER BY r.id;

-- name: lock_messages
-- The messages a batch will change, locked in id order first, so that reconcilers
-- working on overlapping messages queue up instead of deadlocking; and, for messages
-- reported on per part, before their other parts are read, so that two reconcilers
-- holding different parts of one message cannot both miss the other's.
SELECT id FROM messages WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE;

-- name: applied_parts
-- The parts of these messages already recorded by earlier receipts.
SELECT message_id, part, status::text AS status, error_code, error_detail
  FROM receipts
 WHERE message_id = ANY($1::bigint[]) AND part IS NOT NULL AND status IS NOT NULL
   AND outcome IN ('applied', 'partial');

-- name: apply_receipts
-- One statement per batch: every message's new status as decided from its receipts,
-- applied only while the message is still in the status the decision started from
-- (another reconciler or a late send result may have moved it; its receipts are then
-- looked at again). Delivery, read and failure times never precede the send. The
-- provider's id is filled in where only our id matched, unless another message has it.
UPDATE messages m
   SET status = u.status::message_status,
       provider_message_id = CASE
           WHEN m.provider_message_id IS NULL AND u.provider_id IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM messages o
                                 WHERE o.account = m.account
                                   AND o.provider_message_id = u.provider_id)
           THEN u.provider_id ELSE m.provider_message_id END,
       sent_at = coalesce(m.sent_at, u.sent_at),
       delivered_at = CASE WHEN u.delivered_at IS NULL THEN m.delivered_at
                           ELSE coalesce(m.delivered_at, greatest(u.delivered_at, m.sent_at)) END,
       read_at = CASE WHEN u.read_at IS NULL THEN m.read_at
                      ELSE coalesce(m.read_at, greatest(u.read_at, m.sent_at)) END,
       failed_at = CASE WHEN u.failed_at IS NULL THEN m.failed_at
                        ELSE greatest(u.failed_at, m.sent_at) END,
       error_code = CASE WHEN u.status IN ('undelivered', 'failed') THEN u.code
                         WHEN m.status IN ('unknown', 'expired') THEN NULL
                         ELSE m.error_code END,
       error_detail = CASE WHEN u.status IN ('undelivered', 'failed') THEN u.detail
                           WHEN m.status IN ('unknown', 'expired') THEN NULL
                           ELSE m.error_detail END,
       updated_at = now()
  FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
              $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], $10::text[])
       AS u(id, expected, status, sent_at, delivered_at, read_at, failed_at, code, detail,
            provider_id)
 WHERE m.id = u.id AND m.status = u.expected::message_status
RETURNING m.id;

-- name: settle_receipts
-- What became of each receipt of the batch ($4 mode): 'settle' (applied_at set, with
-- its outcome), 'wait' (its message is not sent yet: look again on the next pass),
-- 'retry' (its message moved meanwhile: likewise), 'missing' (no message matches: look
-- again after $5 doubling per try, at most $6). The matched message is recorded.
-- A settled receipt flagged opt_out (the provider's code says the recipient opted out,
-- e.g. ZoomConnect's FAILED_OPTOUT) suppresses its message's number on the message's
-- channel, whatever the outcome (the opt-out is news even when the status is not), as a
-- provider notice ('webhook:<account>', so an opt-in lifts it as it lifts a block).
-- Returns how many numbers it suppressed.
WITH settled AS (
UPDATE receipts r
   SET outcome = coalesce(u.outcome, r.outcome),
       message_id = coalesce(u.message_id, r.message_id),
       applied_at = CASE WHEN u.mode = 'settle' THEN now() END,
       tries = r.tries + (u.mode = 'missing')::int,
       retry_at = CASE u.mode
                      WHEN 'settle' THEN r.retry_at
                      WHEN 'missing' THEN now() + least($5::interval * power(2, least(r.tries, 20)),
                                                        $6::interval)
                      ELSE clock_timestamp() END
  FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[])
       AS u(id, outcome, message_id, mode)
 WHERE r.id = u.id
RETURNING r.account, r.message_id, r.provider_status, r.opt_out AND u.mode = 'settle' AS opted
), suppressed AS (
    INSERT INTO suppressions (phone, channel, reason, source)
    SELECT DISTINCT ON (m.phone, m.channel) m.phone, m.channel,
           'opted out through the provider (' || left(s.provider_status, 40) || ')',
           'webhook:' || s.account
      FROM settled s JOIN messages m ON m.id = s.message_id
     WHERE s.opted
     ORDER BY m.phone, m.channel
    ON CONFLICT (phone, channel) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM suppressed;

-- name: claim_polls
-- Up to $4 sent messages of account $1 due for a status lookup by $6 (the start of this
-- pass): the first look $2 after sending, oldest first; each later look the next gap of
-- $7 after the one before (1, 5, 15, 60 minutes after sending by default), then every $5.
-- Looks stop at the message's deadline: the end of the receipt window $3 after sending,
-- or the campaign's validity (``expires_at``) if that comes first. The last look falls
-- on the deadline itself; after it ``next_poll_at`` is 'infinity'. A message never
-- looked at gets one look within the window whatever its validity; one sent longer ago
-- than the window, or without a provider id, is never looked at (``poll`` false).
-- Claiming moves the next look on (SKIP LOCKED: concurrent pollers take others).
WITH due AS (
    (SELECT id FROM messages
      WHERE account = $1 AND status = 'sent' AND next_poll_at IS NULL
        AND sent_at <= $6::timestamptz - $2::interval
      ORDER BY sent_at
      LIMIT $4)
    UNION ALL
    (SELECT id FROM messages
      WHERE account = $1 AND status = 'sent' AND next_poll_at <= $6::timestamptz
      ORDER BY next_poll_at
      LIMIT $4)
), claimed AS (
    SELECT m.id, m.polls,
           m.provider_message_id IS NOT NULL
             AND (m.next_poll_at IS NOT NULL OR m.sent_at > now() - $3::interval) AS poll,
           least(m.sent_at + $3::interval, coalesce(m.expires_at, 'infinity')) AS deadline
      FROM messages m JOIN due USING (id)
     WHERE m.status = 'sent'
     ORDER BY m.id
     LIMIT $4
       FOR UPDATE OF m SKIP LOCKED
)
UPDATE messages m
   SET next_poll_at = CASE WHEN c.poll AND now() < c.deadline
                           THEN least(c.deadline,
                                      now() + coalesce(($7::interval[])[c.polls + 1],
                                                       $5::interval))
                           ELSE 'infinity' END,
       polls = m.polls + c.poll::int
  FROM claimed c
 WHERE m.id = c.id
RETURNING m.id, m.provider_message_id, c.poll;

-- name: match_arrivals
-- For receipts arriving in one batch (the writer's, before they are stored): each one's
-- message, matched as due_receipts matches it (the provider's id, else our echoed id; same
-- account), with what the decision needs; and whether its provider event is stored
-- already (a retried webhook). ord is the receipt's place in the batch, from 1;
-- received_at is the transaction's now(), which the receipts' received_at will be.
-- Messages are read, not locked: apply_receipts changes a message only while it is still
-- in the status this read saw (its UPDATE takes the row lock, and re-reads a row another
-- transaction changed meanwhile), and a message that moved has its receipts looked at
-- again by the reconciler. Most receipts change nothing (a 'sent' receipt for a message
-- already 'sent'), and a lock would cost them a write each. The exception is a message
-- reported on per part ($5: the receipt's part): it is locked (in id order, as
-- lock_messages, so writers and reconcilers queue up rather than deadlock) before its
-- earlier parts are read, so that two writers holding different parts of one message
-- cannot both miss the other's; only once its send is recorded (one still 'queued' or
-- 'sending' cannot be applied yet, and locking it would make the dispatcher's
-- record_results wait for this transaction). A locked message is re-read at its latest
-- version.
WITH matched AS (
    SELECT u.ord, u.part, m.id, m.status, m.segments, m.provider_message_id,
           EXISTS (SELECT 1 FROM receipts r
                    WHERE u.event_id IS NOT NULL AND r.account = u.account
                      AND r.provider_event_id = u.event_id) AS seen
      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::smallint[])
           WITH ORDINALITY AS u(account, provider_id, message_id, event_id, part, ord)
      LEFT JOIN LATERAL (
            (SELECT id, status, segments, provider_message_id FROM messages
              WHERE account = u.account AND provider_message_id = u.provider_id)
            UNION ALL
            (SELECT id, status, segments, provider_message_id FROM messages
              WHERE id = u.message_id AND account = u.account)
            LIMIT 1
      ) m ON true
), locked AS (
    SELECT id, status, segments, provider_message_id
      FROM messages
     WHERE id IN (SELECT id FROM matched
                   WHERE part IS NOT NULL AND status NOT IN ('queued', 'sending'))
     ORDER BY id
       FOR UPDATE
)
SELECT x.ord, x.seen, coalesce(l.id, x.id) AS message_id,
       coalesce(l.status, x.status)::text AS status,
       coalesce(l.segments, x.segments) AS segments,
       coalesce(l.provider_message_id, x.provider_message_id) AS provider_message_id,
       now() AS received_at
  FROM matched x LEFT JOIN locked l ON l.id = x.id
 ORDER BY x.ord;

-- name: insert_decided_receipts
-- Receipts written once, already decided (issue 20): those the writer applied ($16
-- settled) are stored with their outcome and applied_at; the others pending, for the
-- reconciler ('wait': their message is not sent yet, look at once; 'missing': no message
-- matches yet, look after $17). $15 is the matched message. A retried event is skipped
-- as in insert_receipts. A settled receipt flagged opt_out suppresses its message's
-- number on its channel, as settle_receipts does. Returns how many were new and how many
-- numbers were suppressed.
WITH new AS (
    INSERT INTO receipts (account, provider_message_id, message_id, provider_event_id, status,
                          provider_status, error_code, error_detail, part, occurred_at, raw,
                          opt_out, applied_at, outcome, source, tries, retry_at)
    SELECT r.account, r.provider_id, coalesce(r.matched, r.message_id), r.event_id,
           r.status::message_status, r.provider_status, r.code, r.detail, r.part,
           r.occurred_at, r.raw::jsonb, r.opt_out,
           CASE WHEN r.rejected OR r.settled THEN now() END,
           CASE WHEN r.rejected THEN 'rejected' ELSE r.outcome END, $14,
           (r.mode = 'missing')::int,
           CASE WHEN r.mode = 'missing' THEN now() + $17::interval ELSE now() END
      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::text[], $9::smallint[], $10::timestamptz[], $11::text[],
                  $12::boolean[], $13::boolean[], $15::bigint[], $16::boolean[], $18::text[],
                  $19::text[])
           AS r(account, provider_id, message_id, event_id, status, provider_status, code,
                detail, part, occurred_at, raw, opt_out, rejected, matched, settled, outcome,
                mode)
    ON CONFLICT (account, provider_event_id) WHERE provider_event_id IS NOT NULL DO NOTHING
    RETURNING account, message_id, provider_status, opt_out AND applied_at IS NOT NULL
              AND outcome <> 'rejected' AS opted
), suppressed AS (
    INSERT INTO suppressions (phone, channel, reason, source)
    SELECT DISTINCT ON (m.phone, m.channel) m.phone, m.channel,
           'opted out through the provider (' || left(n.provider_status, 40) || ')',
           'webhook:' || n.account
      FROM new n JOIN messages m ON m.id = n.message_id
     WHERE n.opted
     ORDER BY m.phone, m.channel
    ON CONFLICT (phone, channel) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM new) AS stored, (SELECT count(*) FROM suppressed) AS suppressed;
