//! The order system's domain (spec 003-004): a sale of a product's stock, orders placed under an
//! idempotency key, and the order id derived from that key.
//!
//! The order id is a pure function of the idempotency key, so every retry of one request (even
//! after its reservation was compensated) names the same order, and the store's uniqueness on
//! the order id keeps one order per key. No I/O, clock or randomness here.

use serde::{Deserialize, Serialize};

/// Longest product or user id, in bytes.
pub const ID_LEN_MAX: usize = 64;
/// Longest idempotency key.
pub const KEY_LEN_MAX: usize = 200;
/// Largest stock a sale may start with.
pub const QUANTITY_MAX: u64 = 1_000_000_000;

/// Starts (or restarts) the sale of a product with `quantity` items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSale {
    pub product_id: String,
    pub quantity: u64,
}

/// A user asks for one item of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub product_id: String,
    pub user_id: String,
}

/// An accepted order, as queued and as persisted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub product_id: String,
    pub user_id: String,
    pub idempotency_key: String,
    /// The reservation in the stock cache this order was queued under (the id of the request
    /// attempt that took the item). A cancellation names it, so a cancelled reservation's
    /// messages are skipped while a later reservation under the same key can still be
    /// persisted. 0 in messages from before reservations were named: never cancelled.
    #[serde(default)]
    pub reservation: u64,
}

/// Input that is not valid: the field and why. Shown to the client as a 4xx naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

/// Product and user ids: 1 to [`ID_LEN_MAX`] bytes of ASCII letters, digits, `-`, `_`, `.`, `:`.
///
/// # Errors
/// [`InvalidField`] naming `field`.
pub fn validate_id(field: &'static str, id: &str) -> Result<(), InvalidField> {
    let reason = if id.is_empty() {
        "must not be empty".to_string()
    } else if id.len() > ID_LEN_MAX {
        format!("must be at most {ID_LEN_MAX} characters")
    } else if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        "may hold only letters, digits, '-', '_', '.' and ':'".to_string()
    } else {
        return Ok(());
    };
    Err(InvalidField { field, reason })
}

/// Idempotency keys: 1 to [`KEY_LEN_MAX`] visible ASCII characters.
///
/// # Errors
/// [`InvalidField`] naming the header.
pub fn validate_key(key: &str) -> Result<(), InvalidField> {
    if key.is_empty() || key.len() > KEY_LEN_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidField {
            field: "x-idempotency-key",
            reason: format!("must be 1 to {KEY_LEN_MAX} visible ASCII characters"),
        });
    }
    Ok(())
}

impl InitSale {
    /// # Errors
    /// [`InvalidField`] for a bad product id or a quantity over [`QUANTITY_MAX`].
    pub fn validate(&self) -> Result<(), InvalidField> {
        validate_id("productId", &self.product_id)?;
        if self.quantity > QUANTITY_MAX {
            return Err(InvalidField { field: "quantity", reason: format!("must be at most {QUANTITY_MAX}") });
        }
        Ok(())
    }
}

impl PlaceOrder {
    /// # Errors
    /// [`InvalidField`] for a bad product or user id.
    pub fn validate(&self) -> Result<(), InvalidField> {
        validate_id("productId", &self.product_id)?;
        validate_id("userId", &self.user_id)
    }

    /// The order this request becomes under `key`.
    pub fn order(&self, key: &str) -> Order {
        Order {
            order_id: order_id_for(key),
            product_id: self.product_id.clone(),
            user_id: self.user_id.clone(),
            idempotency_key: key.to_string(),
            reservation: 0,
        }
    }
}

/// The order id of an idempotency key: 128 bits of two FNV-1a hashes with different offsets,
/// formatted like a UUID. Stable across builds, versions and machines.
pub fn order_id_for(key: &str) -> String {
    let fnv = |offset: u64| key.bytes().fold(offset, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    let (hi, lo) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4 ^ key.len() as u64));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_are_stable_and_distinct() {
        assert_eq!(order_id_for("k-1"), order_id_for("k-1"));
        assert_ne!(order_id_for("k-1"), order_id_for("k-2"));
        assert_eq!(order_id_for("abc").len(), 36);
        let ids: std::collections::BTreeSet<String> = (0..10_000).map(|i| order_id_for(&format!("key-{i}"))).collect();
        assert_eq!(ids.len(), 10_000);
        insta::assert_snapshot!("order_id_of_a_key", order_id_for("iphone-15-user-123"));
        // The queued order's JSON (the message on the orders topic).
        let mut order = PlaceOrder { product_id: "iphone-15".into(), user_id: "user-123".into() }.order("key-1");
        order.reservation = 0x1234_5678_9abc_def0;
        insta::assert_snapshot!("order_message", serde_json::to_string_pretty(&order).unwrap());
    }

    #[test]
    fn ids_and_keys_are_checked() {
        assert!(validate_id("productId", "iphone-15").is_ok());
        assert_eq!(validate_id("userId", "").unwrap_err().field, "userId");
        assert!(validate_id("productId", "a b").is_err());
        assert!(validate_key("k").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("with space").is_err());
        assert!(InitSale { product_id: "p".into(), quantity: QUANTITY_MAX + 1 }.validate().is_err());
        let order = PlaceOrder { product_id: "p".into(), user_id: "u".into() }.order("key");
        assert_eq!(order.order_id, order_id_for("key"));
        // A message queued before reservations were named still reads.
        let old: Order =
            serde_json::from_str(r#"{"order_id":"o","product_id":"p","user_id":"u","idempotency_key":"k"}"#).unwrap();
        assert_eq!(old.reservation, 0);
    }
}
