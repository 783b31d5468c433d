//! Linearizability checking: see the crate description.
