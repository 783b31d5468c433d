-- The event store (CockroachDB in production, PostgreSQL locally). Only SQL both accept:
-- no advisory locks, no LISTEN/NOTIFY, no sequences relied on for gap-free order.
CREATE TABLE IF NOT EXISTS events (
    event_id        UUID PRIMARY KEY,
    stream_id       TEXT NOT NULL,
    version         BIGINT NOT NULL CHECK (version >= 1),
    event_type      TEXT NOT NULL,
    event_version   INT NOT NULL,
    data            JSONB NOT NULL,
    command_key     TEXT,
    global_position BIGSERIAL NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_global_position_key UNIQUE (global_position)
);

-- Transactional outbox: one row per event, written in the event's transaction, deleted by
-- the relay once the bus has acknowledged the event.
CREATE TABLE IF NOT EXISTS outbox (
    event_id        UUID PRIMARY KEY,
    global_position BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_global_position_idx ON outbox (global_position);

-- The first outcome of every command sent with an idempotency key, written in the same
-- transaction as its events: a retry answers with it and never applies twice.
CREATE TABLE IF NOT EXISTS command_outcomes (
    idempotency_key TEXT PRIMARY KEY,
    request         TEXT NOT NULL,
    response        JSONB NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
