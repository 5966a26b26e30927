-- Webhook calls refused with a 400 although they authenticated (engine/rejected.py).

-- name: insert_rejected_webhook
-- One refused call: account $1, reason $2, content type $3, the URL's parameters $4
-- (without the secret), the body's size $5 and its excerpt $6 (secrets masked).
INSERT INTO rejected_webhooks (account, reason, content_type, query, body_bytes, excerpt)
VALUES ($1, $2, $3, $4, $5, $6);
