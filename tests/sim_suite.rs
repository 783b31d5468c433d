//! `cargo test --features sim`: the simulation test suite, as promised. The simulation build
//! needs `--cfg madsim` and a target directory of its own, which a feature alone cannot give;
//! so, built without the cfg, this one test runs the madsim build's suite (`cargo sim`, the
//! tests of `tests/sim.rs`) as a child cargo and fails when it fails. `MADSIM_TEST_SEED` and
//! `MADSIM_TEST_NUM` reach it through the environment. The real-infrastructure tests are not
//! compiled under the feature (their files are `cfg(not(any(madsim, feature = "sim")))`).

#![cfg(all(feature = "sim", not(madsim)))]

use std::process::Command;

/// Set in the child cargo's environment: seen again only if the child built this test.
const GUARD: &str = "TESTBED_SIM_SUITE_CHILD";

/// Goal: `cargo test --features sim` runs the simulation tests and exits with their status.
/// Method: run `cargo sim` (the alias's arguments, spelled out) from the workspace root with
/// this process's output, and assert its exit status.
#[test]
fn the_simulation_suite_passes() {
    // A child that built without `--cfg madsim` (a target-specific rustflags setting overrides
    // `build.rustflags`) would compile this test again and recurse: refuse that.
    assert!(
        std::env::var_os(GUARD).is_none(),
        "the simulation build ran without --cfg madsim (is target.<triple>.rustflags or \
         CARGO_TARGET_<TRIPLE>_RUSTFLAGS set?): run `cargo sim`"
    );
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
        .env(GUARD, "1")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the simulation suite failed ({status}): see its output above");
}
