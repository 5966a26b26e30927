-- name: list_contacts
-- Contacts in id order, optionally of group $1 and matching every key=value of $2 (a
-- jsonb object checked against the attributes and the contact's own fields); at most
-- $3 rows, each with the number of matches ignoring the limit.
SELECT c.id, c.phone, c.first_name, c.last_name, c.locale, c.timezone, c.attributes,
       ARRAY(SELECT g.name FROM group_members m JOIN groups g ON g.id = m.group_id
              WHERE m.contact_id = c.id ORDER BY g.name) AS groups,
       EXISTS (SELECT 1 FROM suppressions s WHERE s.phone = c.phone) AS suppressed,
       count(*) OVER () AS total
  FROM contacts c
 WHERE ($1::text IS NULL
        OR EXISTS (SELECT 1 FROM group_members m JOIN groups g ON g.id = m.group_id
                    WHERE g.name = $1 AND m.contact_id = c.id))
   AND (c.attributes || jsonb_strip_nulls(jsonb_build_object(
            'first_name', c.first_name, 'last_name', c.last_name,
            'locale', c.locale, 'timezone', c.timezone))) @> $2::jsonb
 ORDER BY c.id
 LIMIT $3;

-- name: group_exists
SELECT EXISTS (SELECT 1 FROM groups WHERE name = $1);

-- name: contact_detail
SELECT c.id, c.phone, c.first_name, c.last_name, c.locale, c.timezone, c.attributes,
       c.created_at, c.updated_at,
       ARRAY(SELECT g.name FROM group_members m JOIN groups g ON g.id = m.group_id
              WHERE m.contact_id = c.id ORDER BY g.name) AS groups
  FROM contacts c WHERE c.phone = $1;

-- name: suppressions_of_phone
SELECT channel, reason, source, created_at FROM suppressions WHERE phone = $1 ORDER BY channel;

-- name: recent_messages_of_phone
-- The number's latest messages, newest first (the messages_phone_created index).
SELECT m.created_at, k.name AS campaign, m.run_id, r.kind, m.status::text, m.error_detail
  FROM messages m
  JOIN campaign_runs r ON r.id = m.run_id
  JOIN campaigns k ON k.id = r.campaign_id
 WHERE m.phone = $1
 ORDER BY m.created_at DESC
 LIMIT $2;

-- name: delete_contacts_by_phone
-- Their group memberships go with them (ON DELETE CASCADE); their messages keep their
-- rows and number, with contact_id cleared (ON DELETE SET NULL); opt-outs stay.
DELETE FROM contacts WHERE phone = ANY($1::text[]) RETURNING phone;

-- name: count_group_members
SELECT count(*) FROM group_members m JOIN groups g ON g.id = m.group_id WHERE g.name = $1;

-- name: delete_contacts_of_group
DELETE FROM contacts c
 USING group_members m JOIN groups g ON g.id = m.group_id
 WHERE g.name = $1 AND m.contact_id = c.id
RETURNING c.phone;

-- name: remove_group_members
-- Members of group $1 whose number is in $2; the contacts themselves stay.
DELETE FROM group_members m
 USING groups g, contacts c
 WHERE g.name = $1 AND m.group_id = g.id AND c.id = m.contact_id AND c.phone = ANY($2::text[])
RETURNING c.phone;

-- name: delete_group
-- The group and its memberships (ON DELETE CASCADE); the contacts stay.
DELETE FROM groups WHERE name = $1 RETURNING id;

-- name: campaigns_using_group
-- Campaigns that may still fire and name the group in their audience (or hold their
-- audience file in it), so deleting it changes who they reach.
SELECT name, coalesce(spec->'audience'->'exclude_groups' ? $1, false) AS excludes
  FROM campaigns
 WHERE archived_at IS NULL AND status IN ('active', 'paused')
   AND (spec->'audience'->'groups' ? $1 OR spec->'audience'->'exclude_groups' ? $1
        OR 'campaign:' || name = $1)
 ORDER BY name;

-- name: expanding_run
-- A run reading the audience right now: a contact deleted under it would break the
-- foreign key of the batch being written, so removals wait for it.
SELECT r.id, c.name FROM campaign_runs r JOIN campaigns c ON c.id = r.campaign_id
 WHERE r.status = 'expanding' ORDER BY r.id LIMIT 1;
