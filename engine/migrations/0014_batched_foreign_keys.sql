-- Foreign keys of messages checked once per statement, not once per row (issue 20).
--
-- A row-level foreign key runs one lookup per inserted row (and, for contact_id, locks
-- the contact's row, which writes to it): about a third of a COPY of message rows
-- (bench/RESULTS.md). The expander writes thousands of rows per COPY, all of one run and
-- of distinct contacts, so the same guarantees are kept by statement-level triggers over
-- the transition table:
--
--   messages.run_id      must name a run: checked per statement, and the few runs named
--                        are locked FOR KEY SHARE (as the foreign key did), so a run
--                        cannot be deleted under a COPY that names it.
--   messages.contact_id  must name a contact when set: checked per statement with one
--                        join. The contacts are not locked (that lock was the write per
--                        row); a contact deleted while an expansion that read it is still
--                        writing can leave that run's message pointing at no contact,
--                        which every view already shows as a message without a contact
--                        (left joins), as ON DELETE SET NULL does for the others.
--   deleting runs        deletes their messages (was ON DELETE CASCADE), one statement.
--   deleting contacts    sets their messages' contact_id to NULL (was ON DELETE SET
--                        NULL), one statement per delete instead of one scan per contact.
ALTER TABLE messages DROP CONSTRAINT messages_run_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_contact_id_fkey;

CREATE FUNCTION messages_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    PERFORM 1 FROM campaign_runs
     WHERE id IN (SELECT DISTINCT run_id FROM new_messages)
       FOR KEY SHARE;
    SELECT n.run_id INTO missing
      FROM (SELECT DISTINCT run_id FROM new_messages) n
     WHERE NOT EXISTS (SELECT 1 FROM campaign_runs r WHERE r.id = n.run_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "messages" violates foreign key to campaign_runs'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (run_id)=(%s) is not present in table "campaign_runs".', missing);
    END IF;
    SELECT n.contact_id INTO missing
      FROM (SELECT DISTINCT contact_id FROM new_messages WHERE contact_id IS NOT NULL) n
     WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = n.contact_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "messages" violates foreign key to contacts'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (contact_id)=(%s) is not present in table "contacts".', missing);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_references AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION messages_check_references();

-- No statement of the engine changes run_id or contact_id once a message is written (but
-- the contacts trigger below, which sets NULL), so only INSERT is checked: a trigger on
-- every UPDATE would carry the hot path's updates in a transition table.

CREATE FUNCTION campaign_runs_delete_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM messages WHERE run_id IN (SELECT id FROM old_runs);
    RETURN NULL;
END $$;

CREATE TRIGGER campaign_runs_messages AFTER DELETE ON campaign_runs
    REFERENCING OLD TABLE AS old_runs
    FOR EACH STATEMENT EXECUTE FUNCTION campaign_runs_delete_messages();

CREATE FUNCTION contacts_forget_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE messages SET contact_id = NULL WHERE contact_id IN (SELECT id FROM old_contacts);
    RETURN NULL;
END $$;

CREATE TRIGGER contacts_messages AFTER DELETE ON contacts
    REFERENCING OLD TABLE AS old_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION contacts_forget_messages();
