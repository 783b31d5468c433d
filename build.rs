//! Refuses the simulation feature without the simulation cfg: `cargo test --features sim`
//! would otherwise build the real runtime and pass without simulating anything.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let sim = std::env::var_os("CARGO_FEATURE_SIM").is_some();
    let madsim = std::env::var_os("CARGO_CFG_MADSIM").is_some();
    if sim && !madsim {
        println!("cargo::error=the `sim` feature needs `--cfg madsim`: run `cargo sim` (or `cargo testbed ...`)");
    }
}
