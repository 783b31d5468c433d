//! `cargo test --features sim`: the simulation test suite, as promised. The simulation build
//! needs `--cfg madsim` and a target directory of its own, which a feature alone cannot give;
//! so, built without the cfg, this one test runs the madsim build's suite (`cargo sim`, the
//! tests of `tests/sim.rs`) as a child cargo and fails when it fails. `MADSIM_TEST_SEED` and
//! `MADSIM_TEST_NUM` reach it through the environment. The real-infrastructure tests are not
//! compiled under the feature (their files are `cfg(not(any(madsim, feature = "sim")))`).

#![cfg(all(feature = "sim", not(madsim)))]

use std::process::Command;

/// Goal: `cargo test --features sim` runs the simulation tests and exits with their status.
/// Method: run `cargo sim` (the alias's arguments, spelled out) from the workspace root with
/// this process's output, and assert its exit status.
#[test]
fn the_simulation_suite_passes() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "test",
            "--config",
            "build.rustflags=['--cfg','madsim']",
            "--target-dir",
            "target/sim",
            "--features",
            "sim",
        ])
        // The outer build's flags must not leak into the simulation build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the simulation suite failed ({status}): see its output above");
}
