-- Durable cancellations (ADR 5): a reservation whose produce failed is cancelled here before
-- its item is given back in Redis; the worker's persist skips an order whose reservation is at
-- or below its key's cancelled one (reservation ids grow with time: a cancellation covers the
-- key's earlier reservations too, such as one Redis forgot in a restart). Both transactions
-- lock the product's row first, so an order ends persisted or cancelled, never both.
-- `reservation` names the item taken: Redis's clock in microseconds when it was reserved.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS reservation BIGINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS order_cancellations (
    idempotency_key TEXT PRIMARY KEY,
    reservation     BIGINT NOT NULL,
    product_id      TEXT NOT NULL,
    cancelled_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
