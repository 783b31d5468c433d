//! Limits on a run's workload and faults, for shrinking: at most so many clients, operations in
//! all and injected faults. The same seed under tighter limits is a smaller run of the same
//! shape. Per thread, like the planted-bug switch (one simulation per thread).

use std::cell::Cell;

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub clients: Option<usize>,
    pub ops: Option<usize>,
    pub faults: Option<usize>,
}

/// What a run actually had: clients, operations in all, faults injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Size {
    pub clients: usize,
    pub ops: usize,
    pub faults: usize,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} clients, {} operations, {} faults", self.clients, self.ops, self.faults)
    }
}

thread_local! {
    static LIMITS: Cell<Limits> = const { Cell::new(Limits { clients: None, ops: None, faults: None }) };
    static SIZE: Cell<Size> = const { Cell::new(Size { clients: 0, ops: 0, faults: 0 }) };
}

pub fn set(limits: Limits) {
    LIMITS.with(|l| l.set(limits));
    SIZE.with(|s| s.set(Size::default()));
}

pub fn get() -> Limits {
    LIMITS.with(Cell::get)
}

/// A scenario reports the clients and operations it starts (after applying the limits).
pub fn report(clients: usize, ops: usize) {
    SIZE.with(|s| {
        let mut size = s.get();
        size.clients += clients;
        size.ops += ops;
        s.set(size);
    });
}

/// The size reported so far.
pub fn size() -> Size {
    SIZE.with(Cell::get)
}

impl Limits {
    /// `wanted` clients, within the limit (at least one).
    pub fn clients(self, wanted: usize) -> usize {
        self.clients.map_or(wanted, |max| wanted.min(max).max(1))
    }

    /// `wanted` operations in all, within the limit (at least one).
    pub fn ops(self, wanted: usize) -> usize {
        self.ops.map_or(wanted, |max| wanted.min(max).max(1))
    }

    /// Whether another fault may be injected after `injected`.
    pub fn fault_allowed(self, injected: usize) -> bool {
        self.faults.is_none_or(|max| injected < max)
    }
}
