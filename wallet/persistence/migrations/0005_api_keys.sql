-- API keys (API.md "Authentication and authorisation"): only the secret's SHA-256 is stored.
CREATE TABLE api_keys (
    id          text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{12}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    scopes      text[] NOT NULL,
    wallets     text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

-- Idempotency keys are scoped per principal ("<principal tag>|<X-Request-ID>"): room for the tag.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_key_check;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 300);
