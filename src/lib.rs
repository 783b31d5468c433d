//! The testbed's root package: the `testbed` CLI and the integration tests under `tests/`
//! (simulation sweeps in the simulation build, real-infrastructure tests in the real build).
//! The work is in the crates: `models`, `services`, `sim`; the real runner (`testbed real`),
//! which needs the real adapters, is here.

pub use models;
pub use services;
pub use sim;

#[cfg(not(madsim))]
pub mod bench;
#[cfg(not(madsim))]
pub mod real;
