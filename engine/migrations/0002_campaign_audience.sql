-- A campaign's audience file is loaded when the campaign is applied: its valid rows
-- become contacts in the group 'campaign:<name>', and its invalid rows are kept here so
-- that every run records them as invalid_number instead of silently dropping them.

CREATE TABLE campaign_invalid_recipients (
    campaign_id  bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    line         integer NOT NULL,
    raw          text NOT NULL,
    reason       text NOT NULL,
    PRIMARY KEY (campaign_id, line)
);

-- Duplicates (the same number reached through two sources) and other per-run tallies
-- that have no message row of their own live in campaign_runs.counts.
