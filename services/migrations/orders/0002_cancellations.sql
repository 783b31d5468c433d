-- Durable cancellations (ADR 5): a reservation whose produce failed is cancelled here before
-- its item is given back in Redis; the worker's persist skips an order whose (key, reservation)
-- is cancelled. Both transactions lock the product's row first, so an order ends persisted or
-- cancelled, never both. `reservation` is the u64 of the request attempt that took the item,
-- stored as its two's-complement BIGINT.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS reservation BIGINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS order_cancellations (
    idempotency_key TEXT NOT NULL,
    reservation     BIGINT NOT NULL,
    product_id      TEXT NOT NULL,
    cancelled_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (idempotency_key, reservation)
);
