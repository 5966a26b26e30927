-- name: link_target
-- Where short code $1 leads, and its message (for the click). The primary key, then the
-- message's unique (run_id, phone) index: two index lookups.
SELECT l.url, l.run_id, m.id AS message_id
  FROM link_codes l
  LEFT JOIN messages m ON m.run_id = l.run_id AND m.phone = l.phone
 WHERE l.code = $1;

-- name: insert_clicks
-- One batch of clicks from the redirect's buffer.
INSERT INTO link_clicks (code, run_id, message_id, clicked_at, agent)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[], $5::text[]);

-- name: ab_test_get
-- The winner test of run $1, if it has one yet.
SELECT run_id, by, test_share, decide_at, decided_at, winner, figures
  FROM ab_tests WHERE run_id = $1;

-- name: ab_test_start
-- The test of run $1 starts: the winner is due at $4.
INSERT INTO ab_tests (run_id, by, test_share, decide_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (run_id) DO NOTHING;

-- name: ab_tests_due
-- Tests whose winner is due ($1 = now) and whose run has expanded its test share: it is
-- sending, or completed because the test share had nobody to send to (a small audience);
-- locked so that two daemons do not decide one test twice.
SELECT t.run_id, t.by, r.spec
  FROM ab_tests t
  JOIN campaign_runs r ON r.id = t.run_id
 WHERE t.decided_at IS NULL AND t.decide_at <= $1 AND r.status IN ('sending', 'completed')
 ORDER BY t.decide_at
   FOR UPDATE OF t, r SKIP LOCKED;

-- name: ab_test_figures
-- What the winner is chosen on: variant_outcomes of run $1 at this moment.
SELECT variant, recipients, accepted, delivered, delivery_rate, clickers, clicks,
       click_through_rate
  FROM variant_outcomes WHERE run_id = $1;

-- name: ab_test_decide
-- Record the winner ($2) and its figures ($3) of run $1, and send the run back to the
-- expander for the rest of its audience (a fresh checkpoint; the test's rows stay).
WITH decided AS (
    UPDATE ab_tests SET decided_at = $4, winner = $2, figures = $3
     WHERE run_id = $1 AND decided_at IS NULL
    RETURNING run_id
)
UPDATE campaign_runs r
   SET status = 'scheduled', checkpoint = NULL, updated_at = now()
  FROM decided
 WHERE r.id = decided.run_id;

-- name: report_link_outcomes
-- link_outcomes of run $1, by variant then most clicked.
SELECT variant, link, messages, delivered, unique_clickers, clicks, bot_clicks,
       click_through_rate, median_seconds_to_click, p95_seconds_to_click
  FROM link_outcomes WHERE run_id = $1
 ORDER BY variant NULLS FIRST, unique_clickers DESC, link;

-- name: report_variant_outcomes
-- variant_outcomes of run $1.
SELECT variant, recipients, accepted, delivered, delivery_rate, clickers, clicks,
       click_through_rate, cost
  FROM variant_outcomes WHERE run_id = $1
 ORDER BY variant;

-- name: report_run_clicks
-- Clickers (messages with a click by a person) of run $1, for the chart page's funnel.
SELECT count(*) FROM message_clicks WHERE run_id = $1;

-- name: run_has_links
-- Whether run $1 has tracked links (one index probe).
SELECT EXISTS (SELECT 1 FROM link_codes WHERE run_id = $1);
