-- name: sending_runs
-- Runs whose messages may be sent now, with the account and spec each one sends with.
SELECT r.id, r.spec, r.spec->>'provider' AS account
  FROM campaign_runs r
 WHERE r.status = 'sending'
 ORDER BY r.id;

-- name: claim_messages
-- Claim up to $2 due messages of run $1 for worker $3 until $4 (the lease). Decided in
-- the same statement, just before sending: a message past its expiry becomes 'expired',
-- one whose number opted out since expansion becomes 'suppressed'; the rest become
-- 'sending' with one more attempt. SKIP LOCKED: concurrent dispatchers never claim the
-- same message. Only runs still in 'sending' are served. The recipient's time zone is
-- looked up only when $5 (the campaign has quiet hours).
-- ``decided`` is MATERIALIZED: inlined, its CASE (and the suppression lookup in it) would
-- run once for every reference to d.status below, seven times per message.
WITH claimable AS (
    SELECT m.id, m.phone, m.channel, m.expires_at
      FROM messages m
     WHERE m.run_id = $1 AND m.status = 'queued' AND m.next_attempt_at <= now()
       AND EXISTS (SELECT 1 FROM campaign_runs r WHERE r.id = $1 AND r.status = 'sending')
     ORDER BY m.next_attempt_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), decided AS MATERIALIZED (
    SELECT c.id,
           CASE WHEN c.expires_at <= now() THEN 'expired'
                WHEN EXISTS (SELECT 1 FROM suppressions s
                              WHERE s.phone = c.phone AND s.channel IN ('*', c.channel))
                     THEN 'suppressed'
                ELSE 'sending' END::message_status AS status
      FROM claimable c
)
UPDATE messages m
   SET status = d.status,
       attempts = m.attempts + (d.status = 'sending')::int,
       worker = CASE WHEN d.status = 'sending' THEN $3 END,
       lease_until = CASE WHEN d.status = 'sending' THEN $4::timestamptz END,
       error_code = CASE d.status WHEN 'expired' THEN 'expired'
                                  WHEN 'suppressed' THEN 'suppressed' ELSE m.error_code END,
       error_detail = CASE d.status WHEN 'expired' THEN 'not sent within its validity'
                                    WHEN 'suppressed' THEN 'opted out before it was sent'
                                    ELSE m.error_detail END,
       failed_at = CASE WHEN d.status = 'expired' THEN now() ELSE m.failed_at END,
       updated_at = now()
  FROM decided d
 WHERE m.id = d.id
RETURNING m.id, m.phone, m.body, m.sender, m.channel, m.encoding, m.segments, m.attempts,
          m.status::text, m.account, cardinality(m.tried_accounts) AS tried,
          CASE WHEN $5 THEN (SELECT c.timezone FROM contacts c WHERE c.id = m.contact_id) END
              AS timezone;

-- name: record_results
-- Every result of a batch in one statement. Late results still land on messages that
-- lease recovery marked 'unknown' meanwhile: the provider's answer settles them.
-- The guard (this worker's message, still 'sending' or 'unknown') compares with columns
-- of the batch behind an OFFSET 0 fence, so the planner takes it as part of the join and
-- looks each result up by id. Written as plain filters on messages, the statistics of a
-- busy queue (almost nothing 'sending') made it read those rows by status and compare
-- each with every result: quadratic in the batch size.
UPDATE messages m
   SET status = r.status::message_status,
       provider_message_id = coalesce(r.provider_id, m.provider_message_id),
       error_code = r.code,
       error_detail = r.detail,
       next_attempt_at = coalesce(r.next_at, m.next_attempt_at),
       attempts = m.attempts - r.refund,
       sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE m.sent_at END,
       failed_at = CASE WHEN r.status = 'failed' THEN now() ELSE m.failed_at END,
       lease_until = NULL,
       tried_accounts = CASE WHEN NOT r.handed OR m.account = ANY (m.tried_accounts)
                             THEN m.tried_accounts
                             ELSE m.tried_accounts || m.account END,
       updated_at = now()
  FROM (SELECT u.*, $8::text AS worker,
               '{sending,unknown}'::message_status[] AS recordable
          FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                      $6::timestamptz[], $7::int[], $9::bool[])
               AS u(id, status, provider_id, code, detail, next_at, refund, handed)
        OFFSET 0) AS r
 WHERE m.id = r.id AND m.worker = r.worker AND m.status = ANY (r.recordable);

-- name: move_messages
-- A route chose another account for these claimed messages ($1 ids, $2 accounts, $4 their
-- cost on it; NULL: that account has no price for the number, keep the estimate) just
-- before sending them: record it first, so lease recovery and receipts see the account
-- that may carry each one. Only this worker's ($3) messages still 'sending'.
UPDATE messages m
   SET account = u.account, cost = coalesce(u.cost, m.cost), updated_at = now()
  FROM unnest($1::bigint[], $2::text[], $4::numeric[]) AS u(id, account, cost)
 WHERE m.id = u.id AND m.worker = $3 AND m.status = 'sending';

-- name: recover_leases
-- Messages whose dispatcher stopped before recording the send: they may have been sent,
-- so they become 'unknown' (never resent silently), except on accounts whose provider
-- deduplicates on our key ($1), where sending again is safe and they are re-queued.
UPDATE messages
   SET status = CASE WHEN account = ANY($1::text[]) THEN 'queued' ELSE 'unknown' END::message_status,
       error_code = CASE WHEN account = ANY($1::text[]) THEN error_code ELSE 'lease_expired' END,
       error_detail = CASE WHEN account = ANY($1::text[]) THEN error_detail
                           ELSE 'the dispatcher ' || coalesce(worker, '?') ||
                                ' stopped before recording the send; it may have been sent' END,
       next_attempt_at = now(),
       lease_until = NULL,
       updated_at = now()
 WHERE status = 'sending' AND lease_until < now()
RETURNING id, status::text;

-- name: pause_run
-- The failure brake: a run whose recent sends are mostly rejected stops burning its
-- audience until someone looks.
UPDATE campaign_runs SET status = 'paused', reason = $2, updated_at = now()
 WHERE id = $1 AND status = 'sending';
