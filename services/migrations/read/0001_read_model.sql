-- The read model (PostgreSQL): balances and transactions projected from the events, and the
-- projection's checkpoint, all written in one transaction per event.
CREATE TABLE IF NOT EXISTS account_balances (
    account_id      TEXT PRIMARY KEY,
    owner_name      TEXT NOT NULL,
    currency        TEXT NOT NULL,
    balance         NUMERIC NOT NULL,
    version         BIGINT NOT NULL,
    global_position BIGINT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS transactions (
    event_id        UUID PRIMARY KEY,
    account_id      TEXT NOT NULL,
    version         BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    amount          NUMERIC NOT NULL,
    balance_after   NUMERIC NOT NULL,
    global_position BIGINT NOT NULL,
    applied_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT transactions_account_version_key UNIQUE (account_id, version)
);

CREATE TABLE IF NOT EXISTS projection_checkpoint (
    projection           TEXT PRIMARY KEY,
    events_applied       BIGINT NOT NULL,
    last_global_position BIGINT NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
