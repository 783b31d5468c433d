-- The order system's truth (PostgreSQL): products with their stock, and persisted orders.
CREATE TABLE IF NOT EXISTS products (
    product_id    TEXT PRIMARY KEY,
    stock         BIGINT NOT NULL CHECK (stock >= 0),
    initial_stock BIGINT NOT NULL CHECK (initial_stock >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS orders (
    order_id        TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    product_id      TEXT NOT NULL REFERENCES products (product_id),
    user_id         TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_product_idx ON orders (product_id);
