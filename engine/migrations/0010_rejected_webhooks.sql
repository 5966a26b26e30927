-- Webhook payloads we could not take, kept for analysts (issue 18 item 12, issue 17 item 4),
-- and receipts that say the recipient opted out (issue 17 item 2).
--
-- A call that authenticated but cannot be read or stored (not JSON, nested too deep, a
-- value PostgreSQL refuses) is answered 400 and lands in rejected_webhooks: never its whole
-- body, a bounded excerpt with every secret masked. One unreadable event of an envelope
-- that is otherwise read (Sunshine) is a receipt settled with outcome 'rejected' instead
-- (its event is JSON and has an id, so a repeat is stored once). rejected_payloads shows
-- both.
CREATE TABLE rejected_webhooks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account       text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    reason        text NOT NULL,                -- why it was refused (secrets masked)
    content_type  text,
    query         text,                         -- the URL's parameters, without the secret
    body_bytes    integer NOT NULL,             -- the size of the whole body
    excerpt       text NOT NULL                 -- its first characters, secrets masked
);
CREATE INDEX rejected_webhooks_received ON rejected_webhooks (account, received_at);

-- the provider flagged the receipt's code as an opt-out (ZoomConnect's FAILED_OPTOUT): the
-- reconciler suppresses its message's number on that message's channel when it settles it
ALTER TABLE receipts ADD COLUMN opt_out boolean NOT NULL DEFAULT false;

CREATE VIEW rejected_payloads AS
SELECT 'call'::text AS kind, account, received_at, reason, excerpt
  FROM rejected_webhooks
UNION ALL
SELECT 'event'::text, account, received_at, coalesce(error_detail, provider_status),
       left(raw::text, 2000)
  FROM receipts
 WHERE outcome = 'rejected';

COMMENT ON VIEW rejected_payloads IS
    'Webhook payloads refused: whole calls (kind call: answered 400) and single unreadable'
    ' events of a call otherwise applied (kind event). Excerpts have secrets masked.';
