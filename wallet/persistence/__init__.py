"""PostgreSQL and Redis access: pools, migrations, the event store, idempotency, read models."""
