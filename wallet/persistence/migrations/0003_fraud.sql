-- Fraud detection (docs/EVENTS.md): what the worker has processed, the window its rules look at,
-- and the alerts. Independent of 0002 (transfers): it references no table of another migration.

-- One row per event the worker has processed, written in the same transaction as that event's
-- alerts: a redelivered event finds its row and changes nothing.
CREATE TABLE fraud_processed_events (
    event_id     uuid PRIMARY KEY,
    wallet_id    text NOT NULL,
    event_type   text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fraud_processed_events_processed_at ON fraud_processed_events (processed_at);

-- The money movements the rules need to remember (withdrawals, for RAPID_WITHDRAWALS).
-- Amounts in cents, like everywhere else.
CREATE TABLE fraud_activity (
    event_id    uuid PRIMARY KEY,
    wallet_id   text NOT NULL,
    event_type  text NOT NULL,
    version     bigint NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fraud_activity_wallet ON fraud_activity (wallet_id, occurred_at);
CREATE INDEX fraud_activity_recorded_at ON fraud_activity (recorded_at);

-- At most one alert per (triggering event, rule), whatever the deliveries.
-- event_id: the event the alert is about; source_event_id: the event whose processing raised it
-- (the same, unless events of a wallet arrived out of order). published_at: when the alert event
-- was confirmed by the broker (NULL: still to publish).
CREATE TABLE fraud_alerts (
    id              uuid PRIMARY KEY,
    wallet_id       text NOT NULL,
    rule            text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    event_id        uuid NOT NULL,
    source_event_id uuid NOT NULL,
    amount          bigint CHECK (amount >= 0),
    currency        char(3),
    reason          text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at    timestamptz,
    UNIQUE (event_id, rule)
);
CREATE INDEX fraud_alerts_wallet ON fraud_alerts (wallet_id, created_at DESC);
CREATE INDEX fraud_alerts_created_at ON fraud_alerts (created_at DESC);
CREATE INDEX fraud_alerts_source ON fraud_alerts (source_event_id);
CREATE INDEX fraud_alerts_unpublished ON fraud_alerts (created_at) WHERE published_at IS NULL;
