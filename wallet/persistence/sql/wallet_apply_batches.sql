-- The flush function: its one current definition. Applied by ``migrate()`` after the numbered
-- migrations whenever this file's hash differs from the one recorded in ``schema_migrations``, so a
-- change to it is a change to this file alone (0001, 0002 and 0004 keep their copies as history).
--
-- One flush: many wallets' batches in one round trip, in two ways:
--
-- * together (``wallet_apply_batches_together``), when the flush holds several wallets, one batch
--   each: a handful of statements for all of them, so a statement's start-up (the executor, the
--   CHECK constraints' set-up) is paid once a flush rather than once a wallet. At the first refusal
--   (a conflict, a saga not in the step's state, a key already taken) it raises, the dispatcher
--   rolls it all back, and the batches go
-- * one by one (``wallet_apply_batches_one_by_one``): each wallet's batch in its own
--   subtransaction, so a refusal rolls back that wallet alone and its position is returned (its
--   actor reloads and decides again, or replays the stored answers); the others commit.
--
-- Both give the same result for the same batches (one case aside that the service never sends: a
-- new saga's key recorded by another batch of the same flush, which one by one refuses only if that
-- batch comes first). One notification wakes the outbox relay if anything was written.
--
-- The X-Request-ID check is part of the flush (issue 12): a keyed request makes no lookup of its
-- own before its command reaches the actor. A batch whose keys are already recorded is not applied;
-- the function returns those keys' stored records, so the actor replays (or refuses with 422) just
-- those commands and decides the others again, without a reload.
--
-- Returns a jsonb array with one element per wallet batch that did not commit, in order:
--   {"p": position (1-based)}                       conflict
--   {"p": position, "t": [{"k","f","s","r"}, ...]}  keys already recorded: their records
-- (The return type was integer[] until issue 12; CREATE OR REPLACE cannot change it, hence the
-- DROP. An instance of the previous version meeting the new function fails its flushes and
-- checks each one for its events, so it answers nothing wrongly while it is replaced.)
--
-- batches: [{"w": wallet id,
--            "ev": expected version (0: new wallet),
--            "pe": id of the wallet's last event the batch builds on (0004_flush_chain.sql),
--            "le": id of the batch's own last event,
--            "s": new state or null (decisions that wrote nothing still check the version),
--            "e": [{"id","v","t","a","bal","m","at"}] events,
--            "k": [{"k","f","s","r"}] idempotency records (key, fingerprint, status, reply),
--            "g": [{"id","from","to","cur","err","why"}] saga state changes, each from "from";
--                 "from" null: a new saga's row, inserted in state "to" by its debit, with
--                 "src","dst","amt" and its X-Request-ID "rk","rf" (null: none)}]
--
-- A new saga's key must be nobody's: another saga holding it violates transfer_sagas' unique
-- request_key, another request's record is looked for (before the batch's own records go in). Either
-- refuses the wallet's batch (a conflict); the actor then finds the key taken and the service
-- follows whoever holds it (wallet_actor, service/transfers.py).

DROP FUNCTION IF EXISTS wallet_apply_batches(jsonb);

-- The message body of an event, as the relay publishes it (docs/EVENTS.md): json, the text as built.
-- A single-SELECT SQL function: the planner inlines it into the statements that call it.
--
-- The jsonb builder of before (``wallet_outbox_payload``) is dropped rather than changed: a previous
-- version re-applying its own file (an old instance restarting, a rollback) then creates it afresh,
-- where ``CREATE OR REPLACE`` could not change a return type.
DROP FUNCTION IF EXISTS wallet_outbox_payload(uuid, text, text, bigint, text, bigint, jsonb, timestamptz);
CREATE OR REPLACE FUNCTION wallet_outbox_body(
    event_id uuid, event_type text, wallet_id text, amount bigint, currency text, version bigint,
    metadata jsonb, occurred_at timestamptz
) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'eventId', event_id,
        'eventType', event_type,
        'walletId', wallet_id,
        'amount', (amount::numeric / 100)::numeric(20, 2),
        'currency', currency,
        'version', version,
        'metadata', metadata,
        'occurredAt', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
$$;

CREATE OR REPLACE FUNCTION wallet_apply_batches_one_by_one(batches jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    item record;
    wb jsonb;
    s jsonb;
    expected bigint;
    refused jsonb := '[]';
    taken jsonb;
    wrote boolean := false;
    n bigint;
    g jsonb;
BEGIN
    FOR item IN SELECT value, ordinality FROM jsonb_array_elements(batches) WITH ORDINALITY LOOP
        wb := item.value;
        BEGIN
            expected := (wb->>'ev')::bigint;
            -- A new saga's key recorded by another request (one index probe per key).
            PERFORM 1 FROM jsonb_array_elements(coalesce(wb->'g', '[]'::jsonb)) AS g CROSS JOIN LATERAL
                           (SELECT 1 FROM idempotency_keys i WHERE i.key = g.value->>'rk' OFFSET 0) AS i
             WHERE g.value->>'from' IS NULL;
            IF FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WV002'; END IF;
            IF jsonb_array_length(wb->'k') > 0 THEN
                -- A taken key raises unique_violation (after waiting for a concurrent insert of it
                -- to commit or roll back); the handler below then reads the stored records.
                INSERT INTO idempotency_keys (key, fingerprint, status_code, response)
                SELECT k->>'k', k->>'f', (k->>'s')::integer, k->'r'
                FROM jsonb_array_elements(wb->'k') AS k;
            END IF;
            FOR g IN SELECT value FROM jsonb_array_elements(coalesce(wb->'g', '[]'::jsonb)) LOOP
                IF g->>'from' IS NULL THEN  -- a unique violation: the saga or its key exists
                    INSERT INTO transfer_sagas (id, from_wallet_id, to_wallet_id, amount, currency,
                                                state, failure_error, failure_reason, request_key,
                                                request_fingerprint)
                    VALUES ((g->>'id')::uuid, g->>'src', g->>'dst', (g->>'amt')::bigint, g->>'cur',
                            g->>'to', g->>'err', g->>'why', g->>'rk', g->>'rf');
                ELSE
                    UPDATE transfer_sagas
                       SET state = g->>'to',
                           currency = coalesce(g->>'cur', currency),
                           failure_error = coalesce(g->>'err', failure_error),
                           failure_reason = coalesce(g->>'why', failure_reason),
                           updated_at = clock_timestamp()
                     WHERE id = (g->>'id')::uuid AND state = g->>'from';
                    IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WV002'; END IF;
                END IF;
            END LOOP;
            s := wb->'s';
            IF jsonb_typeof(s) IS DISTINCT FROM 'object' THEN
                IF expected = 0 THEN
                    PERFORM 1 FROM wallets WHERE id = wb->>'w';
                    IF FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WV001'; END IF;
                ELSE
                    PERFORM 1 FROM wallets WHERE id = wb->>'w' AND version = expected
                        AND last_event_id IS NOT DISTINCT FROM (wb->>'pe')::uuid;
                    IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WV001'; END IF;
                END IF;
            ELSE
                IF expected = 0 THEN
                    INSERT INTO wallets (id, currency, balance, version, status,
                                         daily_withdrawal_limit, outflow_day, outflow_today,
                                         last_event_id)
                    VALUES (wb->>'w', s->>'currency', (s->>'balance')::bigint,
                            (s->>'version')::bigint, s->>'status', (s->>'limit')::bigint,
                            (s->>'oday')::date, (s->>'otoday')::bigint, (wb->>'le')::uuid)
                    ON CONFLICT (id) DO NOTHING;
                ELSE
                    UPDATE wallets
                       SET balance = (s->>'balance')::bigint,
                           version = (s->>'version')::bigint,
                           status = s->>'status',
                           daily_withdrawal_limit = (s->>'limit')::bigint,
                           outflow_day = (s->>'oday')::date,
                           outflow_today = (s->>'otoday')::bigint,
                           last_event_id = (wb->>'le')::uuid,
                           updated_at = now()
                     WHERE id = wb->>'w' AND version = expected
                       AND last_event_id IS NOT DISTINCT FROM (wb->>'pe')::uuid;
                END IF;
                GET DIAGNOSTICS n = ROW_COUNT;
                IF n = 0 THEN RAISE EXCEPTION USING ERRCODE = 'WV001'; END IF;
                WITH ev AS (
                    INSERT INTO wallet_events (id, wallet_id, version, event_type, amount,
                                               balance_after, metadata, created_at)
                    SELECT e.id, wb->>'w', e.v, e.t, e.a, e.bal, e.m, e."at"
                    FROM jsonb_to_recordset(wb->'e')
                         AS e(id uuid, v bigint, t text, a bigint, bal bigint, m jsonb, "at" timestamptz)
                    RETURNING *
                )
                INSERT INTO outbox (event_id, wallet_id, routing_key, event_type, body)
                SELECT ev.id, ev.wallet_id, 'wallet.' || lower(ev.event_type), ev.event_type,
                       wallet_outbox_body(ev.id, ev.event_type, ev.wallet_id, ev.amount,
                                          s->>'currency', ev.version, ev.metadata, ev.created_at)
                FROM ev ORDER BY ev.version;
                wrote := true;
            END IF;
        EXCEPTION
            WHEN unique_violation OR SQLSTATE 'WV001' OR SQLSTATE 'WV002' THEN
                -- Rolled back to the wallet's start. Keys recorded by others: reported with their
                -- records (none found: a conflict, e.g. one key twice in the batch, another unique).
                taken := NULL;
                IF SQLSTATE = '23505' AND jsonb_array_length(wb->'k') > 0 THEN
                    SELECT jsonb_agg(jsonb_build_object('k', i.key, 'f', i.fingerprint,
                                                        's', i.status_code, 'r', i.response))
                      INTO taken
                      -- One index probe per key (the lateral OFFSET 0): as IN (SELECT ...), a
                      -- generic plan made on a small table hash-joined all of idempotency_keys.
                      FROM jsonb_array_elements(wb->'k') AS k CROSS JOIN LATERAL
                           (SELECT * FROM idempotency_keys i WHERE i.key = k->>'k' OFFSET 0) i;
                END IF;
                refused := refused || jsonb_build_array(CASE WHEN taken IS NULL
                    THEN jsonb_build_object('p', item.ordinality)
                    ELSE jsonb_build_object('p', item.ordinality, 't', taken) END);
        END;
    END LOOP;
    IF wrote THEN
        PERFORM pg_notify('wallet_outbox', '');
    END IF;
    RETURN refused;
END $$;

-- Every batch at once, or an exception: WV001 a conflict (or a wallet twice in the flush), WV002 a
-- saga not in the state its step starts from, unique_violation a key already recorded (or a saga
-- step already applied). Its statements touch a few rows each, by key: the planner settings below
-- make every plan a nested loop of index probes, whatever size the tables had when it was made (a
-- plan is kept for the connection's life; made on small tables, a join would hash or scan the
-- whole table ever after). Locks: keys, then new sagas' rows (by key), then sagas changed (by id),
-- then wallets (in the writer's byte
-- order, as one by one takes them); one by one takes a batch's key, saga and wallet before the next
-- batch's, so a request retried on two instances at once can deadlock two flushes: PostgreSQL ends
-- one (40P01) and its batches are written again (wallet_actor). Returns whether events were written.
CREATE OR REPLACE FUNCTION wallet_apply_batches_together(batches jsonb) RETURNS boolean
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    missing bigint;
    changes bigint;
    created bigint;
    n bigint;
BEGIN
    IF (SELECT count(DISTINCT b->>'w') FROM jsonb_array_elements(batches) AS b)
       <> jsonb_array_length(batches) THEN
        RAISE EXCEPTION USING ERRCODE = 'WV001';  -- two batches of one wallet chain up: one by one
    END IF;

    PERFORM 1 FROM jsonb_array_elements(batches) AS b,
                   jsonb_to_recordset(coalesce(b->'g', '[]')) AS g("from" text, rk text)
              CROSS JOIN LATERAL (SELECT 1 FROM idempotency_keys i WHERE i.key = g.rk OFFSET 0) AS i
             WHERE g."from" IS NULL;
    IF FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WV002'; END IF;

    INSERT INTO idempotency_keys (key, fingerprint, status_code, response)
    SELECT k->>'k', k->>'f', (k->>'s')::integer, k->'r'
      FROM jsonb_array_elements(batches) AS b, jsonb_array_elements(b->'k') AS k;

    -- New sagas' rows (a unique violation: the saga or its key exists), in key order: two
    -- instances inserting the same keys take them in the same order.
    INSERT INTO transfer_sagas (id, from_wallet_id, to_wallet_id, amount, currency, state,
                                failure_error, failure_reason, request_key, request_fingerprint)
    SELECT g.id, g.src, g.dst, g.amt, g.cur, g."to", g.err, g.why, g.rk, g.rf
      FROM jsonb_array_elements(batches) AS b,
           jsonb_to_recordset(coalesce(b->'g', '[]'))
           AS g(id uuid, "from" text, "to" text, cur text, err text, why text, src text, dst text,
                amt bigint, rk text, rf text)
     WHERE g."from" IS NULL
     ORDER BY g.rk, g.id;

    -- A saga changed twice in one flush (never sent so; one by one, the second finds it moved on).
    -- Each change (not a new row) from its expected state.
    SELECT count(*) FILTER (WHERE g."from" IS NOT NULL AND t.id IS NULL) + count(*) - count(DISTINCT g.id),
           count(*) FILTER (WHERE g."from" IS NOT NULL)
      INTO missing, changes
      FROM (SELECT g.id, g."from"
              FROM jsonb_array_elements(batches) AS b,
                   jsonb_to_recordset(coalesce(b->'g', '[]')) AS g(id uuid, "from" text)
             ORDER BY g.id) AS g
      LEFT JOIN LATERAL (SELECT t.id FROM transfer_sagas t
                          WHERE t.id = g.id AND t.state = g."from" FOR UPDATE) AS t ON true;
    IF missing > 0 THEN RAISE EXCEPTION USING ERRCODE = 'WV002'; END IF;
    IF changes > 0 THEN
        UPDATE transfer_sagas AS t
           SET state = g."to",
               currency = coalesce(g.cur, t.currency),
               failure_error = coalesce(g.err, t.failure_error),
               failure_reason = coalesce(g.why, t.failure_reason),
               updated_at = clock_timestamp()
          FROM (SELECT g.* FROM jsonb_array_elements(batches) AS b,
                       jsonb_to_recordset(coalesce(b->'g', '[]'))
                       AS g(id uuid, "from" text, "to" text, cur text, err text, why text)) AS g
         WHERE t.id = g.id AND g."from" IS NOT NULL;
    END IF;

    -- An existing wallet must be at the version and last event the batch builds on (locked, so
    -- it stays so); a new one must not exist yet.
    -- (Wallet ids in byte order, COLLATE "C": the writer's order, which one by one follows.)
    SELECT count(*) FILTER (WHERE CASE WHEN b.ev = 0 THEN y.id IS NOT NULL ELSE x.id IS NULL END),
           count(*) FILTER (WHERE b.ev IS DISTINCT FROM 0 AND jsonb_typeof(b.s) = 'object'),
           count(*) FILTER (WHERE b.ev = 0 AND jsonb_typeof(b.s) = 'object')
      INTO missing, changes, created
      FROM (SELECT * FROM jsonb_to_recordset(batches) AS b(w text, ev bigint, pe uuid, s jsonb)
             ORDER BY b.w COLLATE "C") AS b
      LEFT JOIN LATERAL (SELECT x.id FROM wallets x
                          WHERE b.ev IS DISTINCT FROM 0 AND x.id = b.w AND x.version = b.ev
                            AND x.last_event_id IS NOT DISTINCT FROM b.pe
                            FOR UPDATE) AS x ON true
      LEFT JOIN LATERAL (SELECT y.id FROM wallets y WHERE b.ev = 0 AND y.id = b.w) AS y ON true;
    IF missing > 0 THEN RAISE EXCEPTION USING ERRCODE = 'WV001'; END IF;
    IF created > 0 THEN
        INSERT INTO wallets (id, currency, balance, version, status, daily_withdrawal_limit,
                             outflow_day, outflow_today, last_event_id)
        SELECT b.w, b.s->>'currency', (b.s->>'balance')::bigint, (b.s->>'version')::bigint,
               b.s->>'status', (b.s->>'limit')::bigint, (b.s->>'oday')::date,
               (b.s->>'otoday')::bigint, b.le
          FROM jsonb_to_recordset(batches) AS b(w text, ev bigint, le uuid, s jsonb)
         WHERE b.ev = 0 AND jsonb_typeof(b.s) = 'object'
         ORDER BY b.w COLLATE "C"
        ON CONFLICT (id) DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n < created THEN RAISE EXCEPTION USING ERRCODE = 'WV001'; END IF;
    END IF;
    IF changes > 0 THEN
        UPDATE wallets AS x
           SET balance = (b.s->>'balance')::bigint,
               version = (b.s->>'version')::bigint,
               status = b.s->>'status',
               daily_withdrawal_limit = (b.s->>'limit')::bigint,
               outflow_day = (b.s->>'oday')::date,
               outflow_today = (b.s->>'otoday')::bigint,
               last_event_id = b.le,
               updated_at = now()
          FROM jsonb_to_recordset(batches) AS b(w text, ev bigint, le uuid, s jsonb)
         WHERE x.id = b.w AND b.ev IS DISTINCT FROM 0 AND jsonb_typeof(b.s) = 'object';
    END IF;

    INSERT INTO wallet_events (id, wallet_id, version, event_type, amount, balance_after, metadata,
                               created_at)
    SELECT e.id, b.w, e.v, e.t, e.a, e.bal, e.m, e."at"
      FROM jsonb_to_recordset(batches) AS b(w text, s jsonb, e jsonb),
           jsonb_to_recordset(b.e)
           AS e(id uuid, v bigint, t text, a bigint, bal bigint, m jsonb, "at" timestamptz)
     WHERE jsonb_typeof(b.s) = 'object';
    -- The same rows as the one-by-one path's, built from the batch rather than joined back.
    INSERT INTO outbox (event_id, wallet_id, routing_key, event_type, body)
    SELECT e.id, b.w, 'wallet.' || lower(e.t), e.t,
           wallet_outbox_body(e.id, e.t, b.w, e.a, b.s->>'currency', e.v, e.m, e."at")
      FROM jsonb_to_recordset(batches) AS b(w text, s jsonb, e jsonb),
           jsonb_to_recordset(b.e) AS e(id uuid, v bigint, t text, a bigint, m jsonb, "at" timestamptz)
     WHERE jsonb_typeof(b.s) = 'object'
     ORDER BY b.w, e.v;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END $$;

CREATE OR REPLACE FUNCTION wallet_apply_batches(batches jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_array_length(batches) > 1 THEN
        BEGIN
            IF wallet_apply_batches_together(batches) THEN
                PERFORM pg_notify('wallet_outbox', '');
            END IF;
            RETURN '[]';
        EXCEPTION
            WHEN unique_violation OR SQLSTATE 'WV001' OR SQLSTATE 'WV002' THEN
                NULL;  -- all rolled back: one by one, which tells which batch was refused
        END;
    END IF;
    RETURN wallet_apply_batches_one_by_one(batches);
END $$;
