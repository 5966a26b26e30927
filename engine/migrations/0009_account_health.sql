-- Whether each provider account can send, shared by every daemon (engine.accounts).
-- An account with no row is up. A send answered 401/403 (auth) or 402 (credit) marks it
-- down: its messages go back to the queue and nobody claims for it until a probe (the
-- adapter's authenticated read) or `engine providers check ACCOUNT` marks it up again.
CREATE TABLE account_health (
    account    text PRIMARY KEY,
    up         boolean NOT NULL DEFAULT true,
    reason     text,                       -- 'auth' or 'credit' while down
    detail     text,                       -- the provider's code and message
    since      timestamptz NOT NULL DEFAULT now(),  -- when it went down (or up)
    retry_at   timestamptz,                -- the next probe, while down
    checked_at timestamptz,                -- the last probe or check
    probes     integer NOT NULL DEFAULT 0  -- failed probes since it went down (the backoff)
);
