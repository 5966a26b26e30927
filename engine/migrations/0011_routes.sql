-- Routes across provider accounts (issue 21).
--
-- messages.account is the account that carried the message (or the one last tried when
-- none accepted it): the dispatcher moves it before each send when a route chooses
-- another account. tried_accounts lists, in order, every account a send of the message
-- was handed to (one entry per account, however many attempts it took there).
ALTER TABLE messages ADD COLUMN tried_accounts text[] NOT NULL DEFAULT '{}';

-- account_health now also says when an account behind a route was marked down for
-- failing (reason 'failing': connection refused, 5xx before acceptance, timeouts, 429s
-- beyond the Retry-After budget), besides 'auth' and 'credit'.
COMMENT ON COLUMN account_health.reason IS 'auth, credit or failing while down';
