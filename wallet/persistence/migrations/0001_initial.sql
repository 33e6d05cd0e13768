-- Wallet core: the wallets projection, the immutable event log, the outbox, idempotency records.
-- Money is BIGINT minor units (cents) everywhere.

CREATE TABLE wallets (
    id                     text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    currency               char(3) NOT NULL,
    balance                bigint NOT NULL CHECK (balance >= 0),
    version                bigint NOT NULL CHECK (version >= 1),
    status                 text NOT NULL CHECK (status IN ('ACTIVE', 'FROZEN', 'CLOSED')),
    daily_withdrawal_limit bigint CHECK (daily_withdrawal_limit >= 0),
    outflow_day            date,
    outflow_today          bigint NOT NULL DEFAULT 0 CHECK (outflow_today >= 0),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wallet_events (
    id            uuid PRIMARY KEY,
    wallet_id     text NOT NULL REFERENCES wallets (id),
    version       bigint NOT NULL CHECK (version >= 1),
    event_type    text NOT NULL,
    amount        bigint CHECK (amount >= 0),
    balance_after bigint NOT NULL CHECK (balance_after >= 0),
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL,
    UNIQUE (wallet_id, version)
);

CREATE FUNCTION wallet_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'wallet_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER wallet_events_no_update BEFORE UPDATE ON wallet_events
    FOR EACH ROW EXECUTE FUNCTION wallet_events_refuse_change();
CREATE TRIGGER wallet_events_no_delete BEFORE DELETE ON wallet_events
    FOR EACH ROW EXECUTE FUNCTION wallet_events_refuse_change();
CREATE TRIGGER wallet_events_no_truncate BEFORE TRUNCATE ON wallet_events
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_events_refuse_change();

CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    wallet_id    text NOT NULL,
    routing_key  text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE idempotency_keys (
    key         text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint text NOT NULL,
    status_code integer NOT NULL,
    response    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- One flush: many wallets' batches in one round trip. Each wallet's batch is applied in its own
-- subtransaction: a version conflict or a taken idempotency key rolls back that wallet alone and
-- its position (1-based) is returned, so its actor reloads and decides again; the others commit.
--
-- batches: [{"w": id, "ev": expected version (0: new wallet),
--            "s": new state or null (decisions that wrote nothing still check the version),
--            "e": [{"id","v","t","a","bal","m","at"}], "k": [{"k","f","s","r"}]}]
CREATE FUNCTION wallet_apply_batches(batches jsonb) RETURNS integer[] LANGUAGE plpgsql AS $$
DECLARE
    item record;
    wb jsonb;
    s jsonb;
    expected bigint;
    conflicts integer[] := '{}';
    wrote boolean := false;
    n bigint;
BEGIN
    FOR item IN SELECT value, ordinality FROM jsonb_array_elements(batches) WITH ORDINALITY LOOP
        wb := item.value;
        BEGIN
            expected := (wb->>'ev')::bigint;
            IF jsonb_array_length(wb->'k') > 0 THEN
                INSERT INTO idempotency_keys (key, fingerprint, status_code, response)
                SELECT k->>'k', k->>'f', (k->>'s')::integer, k->'r'
                FROM jsonb_array_elements(wb->'k') AS k;
            END IF;
            s := wb->'s';
            IF jsonb_typeof(s) IS DISTINCT FROM 'object' THEN
                IF expected = 0 THEN
                    PERFORM 1 FROM wallets WHERE id = wb->>'w';
                    IF FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WV001'; END IF;
                ELSE
                    PERFORM 1 FROM wallets WHERE id = wb->>'w' AND version = expected;
                    IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'WV001'; END IF;
                END IF;
            ELSE
                IF expected = 0 THEN
                    INSERT INTO wallets (id, currency, balance, version, status,
                                         daily_withdrawal_limit, outflow_day, outflow_today)
                    VALUES (wb->>'w', s->>'currency', (s->>'balance')::bigint,
                            (s->>'version')::bigint, s->>'status', (s->>'limit')::bigint,
                            (s->>'oday')::date, (s->>'otoday')::bigint)
                    ON CONFLICT (id) DO NOTHING;
                ELSE
                    UPDATE wallets
                       SET balance = (s->>'balance')::bigint,
                           version = (s->>'version')::bigint,
                           status = s->>'status',
                           daily_withdrawal_limit = (s->>'limit')::bigint,
                           outflow_day = (s->>'oday')::date,
                           outflow_today = (s->>'otoday')::bigint,
                           updated_at = now()
                     WHERE id = wb->>'w' AND version = expected;
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
                INSERT INTO outbox (event_id, wallet_id, routing_key, payload)
                SELECT ev.id, ev.wallet_id, 'wallet.' || lower(ev.event_type),
                       jsonb_build_object(
                           'eventId', ev.id,
                           'eventType', ev.event_type,
                           'walletId', ev.wallet_id,
                           'amount', (ev.amount::numeric / 100)::numeric(20, 2),
                           'currency', s->>'currency',
                           'version', ev.version,
                           'metadata', ev.metadata,
                           'occurredAt', to_char(ev.created_at AT TIME ZONE 'UTC',
                                                 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                FROM ev ORDER BY ev.version;
                wrote := true;
            END IF;
        EXCEPTION
            WHEN unique_violation OR SQLSTATE 'WV001' THEN
                conflicts := conflicts || item.ordinality::integer;
        END;
    END LOOP;
    IF wrote THEN
        PERFORM pg_notify('wallet_outbox', '');
    END IF;
    RETURN conflicts;
END $$;
