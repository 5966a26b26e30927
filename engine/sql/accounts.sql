-- name: account_down
-- Mark account $1 down for reason $2 ($3: the provider's words); the first probe comes
-- $4 seconds later. An account that fails again within 10 minutes of a probe bringing it
-- back keeps its backoff ($4 doubling per failed probe, at most $5 seconds). Returns
-- whether it was up before, so the daemon that saw it first logs it.
WITH old AS (SELECT up FROM account_health WHERE account = $1)
INSERT INTO account_health AS h (account, up, reason, detail, since, retry_at, probes)
VALUES ($1, false, $2, $3, now(), now() + make_interval(secs => $4), 0)
ON CONFLICT (account) DO UPDATE
   SET up = false, reason = $2, detail = $3,
       since = CASE WHEN h.up THEN now() ELSE h.since END,
       probes = CASE WHEN h.up AND coalesce(h.checked_at < now() - interval '10 minutes', true)
                     THEN 0 ELSE h.probes END,
       retry_at = CASE WHEN NOT h.up THEN h.retry_at
                       WHEN coalesce(h.checked_at < now() - interval '10 minutes', true)
                       THEN now() + make_interval(secs => $4)
                       ELSE now() + make_interval(secs => least($5, $4 * 2 ^ h.probes)) END
RETURNING (SELECT coalesce(bool_and(old.up), true) FROM old) AS was_up;

-- name: account_up
-- Account $1 authenticated again (a probe or `engine providers check`): everyone resumes.
-- Returns whether it was down before.
WITH old AS (SELECT up FROM account_health WHERE account = $1)
INSERT INTO account_health AS h (account, up, since, checked_at)
VALUES ($1, true, now(), now())
ON CONFLICT (account) DO UPDATE
   SET up = true, reason = NULL, detail = NULL, retry_at = NULL, checked_at = now(),
       since = CASE WHEN h.up THEN h.since ELSE now() END
RETURNING (SELECT coalesce(bool_and(NOT old.up), false) FROM old) AS was_down;

-- name: claim_account_probe
-- Take account $1's due probe (one daemon of many): push its next one back by the
-- backoff, $2 seconds doubling per failed probe up to $3. No row: not due, or up.
UPDATE account_health
   SET retry_at = now() + make_interval(secs => least($3, $2 * 2 ^ least(probes + 1, 20))),
       probes = probes + 1, checked_at = now()
 WHERE account = $1 AND NOT up AND retry_at <= now()
RETURNING account, reason;

-- name: account_probe_failed
-- A probe of account $1 still failed: keep the reason it gives ($2, $3) if it names one.
UPDATE account_health SET reason = coalesce($2, reason), detail = coalesce($3, detail)
 WHERE account = $1 AND NOT up;

-- name: account_health
-- Every account with a row, up or down.
SELECT account, up, reason, detail, since, retry_at, checked_at, probes
  FROM account_health
 ORDER BY account;

-- name: notify_accounts
-- Wake every daemon: an account's health changed.
SELECT pg_notify('engine', 'account');
