-- name: suppress
-- Opt number $1 out of channel $2 ('*': every channel); true when it was not yet.
INSERT INTO suppressions (phone, channel, reason, source) VALUES ($1, $2, $3, $4)
ON CONFLICT (phone, channel) DO NOTHING
RETURNING true;

-- name: unsuppress
-- Channel '*' lifts every suppression of the number.
DELETE FROM suppressions WHERE phone = $1 AND ($2 = '*' OR channel = $2);

-- name: is_suppressed
-- Would a message on channel $2 be blocked ('*' rows block every channel).
SELECT EXISTS (SELECT FROM suppressions WHERE phone = $1 AND channel IN ($2, '*'));

-- name: list_groups
-- Every group by name, with its member count.
SELECT g.name, count(m.contact_id) AS members, g.created_at
FROM groups g LEFT JOIN group_members m ON m.group_id = g.id
GROUP BY g.id
ORDER BY g.name;
