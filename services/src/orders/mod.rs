//! The order system (spec 003-004): the API's contract, the waiting room, the inventory worker
//! and reconciliation, all generic over the ports.

pub mod api;
pub mod contract;
pub mod mem;
pub mod reconcile;
pub mod waiting_room;
pub mod worker;
