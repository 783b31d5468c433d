//! HTTP with axum (real build only): thin routes over the framework-free contracts in
//! `ledger::api`, and the `/health` report.

pub mod auth;
pub mod health;
pub mod ledger;
pub mod orders;
