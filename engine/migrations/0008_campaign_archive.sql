-- Archived campaigns: hidden from `engine campaign list` (unless --all) and never fired
-- again, with every run and message kept. Archiving is orthogonal to the status, which
-- keeps how the campaign ended (finished, cancelled, ...); applying the campaign's file
-- again clears archived_at.
ALTER TABLE campaigns ADD COLUMN archived_at timestamptz;
