-- Receipts, replies and polling.
--
-- receipts stays the audit log of every status report as it arrived; these columns let
-- the reconciler retry the ones it cannot apply yet without rescanning them all the time,
-- and say where each came from.

ALTER TABLE receipts
    ADD COLUMN source    text NOT NULL DEFAULT 'webhook',  -- webhook | poll
    ADD COLUMN tries     smallint NOT NULL DEFAULT 0,      -- lookups that found no message
    ADD COLUMN retry_at  timestamptz NOT NULL DEFAULT now();  -- next look, while pending

-- the reconciler's queue: pending receipts whose next look is due
CREATE INDEX receipts_due ON receipts (retry_at) WHERE applied_at IS NULL;
-- the other parts of a long message reported per part
CREATE INDEX receipts_parts ON receipts (message_id) WHERE part IS NOT NULL;

-- Everything a recipient (or the provider on their behalf) told us: replies, and
-- opt-in/out notifications such as Zingle's block/unblock webhook (body NULL).
CREATE TABLE inbound_messages (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account              text NOT NULL,
    phone                text NOT NULL,
    channel              text NOT NULL DEFAULT 'sms',
    body                 text,
    provider_message_id  text,
    in_reply_to          text,                 -- the provider's id of the message answered
    action               text CHECK (action IN ('opt_out', 'opt_in', 'help')),
    raw                  jsonb NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT now()
);
-- a webhook retried by the provider is stored once (and its opt-out applied once)
CREATE UNIQUE INDEX inbound_messages_provider_id ON inbound_messages (account, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX inbound_messages_phone ON inbound_messages (phone, received_at);

-- Polling sent messages for their status (accounts without delivery webhooks, and the
-- fallback for messages whose receipt is overdue).
ALTER TABLE messages
    ADD COLUMN polls         smallint NOT NULL DEFAULT 0,
    ADD COLUMN next_poll_at  timestamptz;           -- NULL: not polled yet
-- first polls, oldest sent first; then re-polls when due
CREATE INDEX messages_unpolled ON messages (account, sent_at)
    WHERE status = 'sent' AND next_poll_at IS NULL;
CREATE INDEX messages_repoll ON messages (account, next_poll_at)
    WHERE status = 'sent' AND next_poll_at IS NOT NULL;
