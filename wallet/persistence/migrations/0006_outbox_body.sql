-- The outbox keeps each message body as the relay publishes it, in a new column ``body`` (json: the
-- text as built, with no binary form to build and print again), and its event type beside it. Event
-- ids are unique already as wallet_events' primary key, so the outbox's own unique index on them
-- goes: one index entry less at each insert and at each mark. DESIGN.md §6.
--
-- Nothing here rewrites the table or scans it: each statement changes the catalog only, under a
-- lock held for milliseconds, and waits at most lock_timeout for it (a long transaction on the
-- outbox makes the migration fail and the instance retry at its next start, rather than queue every
-- flush behind it). ``payload`` (jsonb) stays for the rows written before, and for those a previous
-- version's flush function writes while instances are replaced; the relay reads ``body`` or else
-- ``payload``, and the type from the column or else from the body.
--
-- (This file replaces 0006_outbox_lean, which converted ``payload`` to json in place: a rewrite under
-- an exclusive lock. A database it migrated runs this file too, since the name differs, and ends
-- with the same columns, ``payload`` being json there: each statement finds its work done or does it.)
SET LOCAL lock_timeout = '5s';
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_event_id_key;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS event_type text;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS body json;
ALTER TABLE outbox ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_has_body;
ALTER TABLE outbox ADD CONSTRAINT outbox_has_body CHECK (body IS NOT NULL OR payload IS NOT NULL) NOT VALID;
