-- The outbox keeps each message body as the relay publishes it (json: the text as built, with no
-- binary form to build and print again) and its event type beside it. Event ids are unique already
-- as wallet_events' primary key, so the outbox's own unique index on them goes: one index entry
-- less at each insert and at each mark. DESIGN.md §6.
--
-- event_type stays nullable: rows the flush function of before this change writes, until migrate
-- replaces it a moment later, have none, and the relay reads their type from the body.
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_event_id_key;
ALTER TABLE outbox ADD COLUMN event_type text;
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
