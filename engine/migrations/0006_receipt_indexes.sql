-- Every receipt is written twice (stored by the webhook writer, then settled by the
-- reconciler), so each index on receipts is paid for twice per receipt, at the busiest
-- moment of a campaign. receipts_pending holds exactly the rows of receipts_due (applied_at
-- IS NULL); the give-up pass and the pending count read receipts_due instead.
DROP INDEX IF EXISTS receipts_pending;
