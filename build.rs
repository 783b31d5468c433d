//! Build facts for repro tokens: the git commit and the rustc version.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=.git/HEAD");
    // A commit moves the branch HEAD names, not HEAD itself: watch the branch's ref too (and
    // packed-refs, where a packed branch lives), or a token names an old commit. Only paths
    // that exist: cargo reruns the script on every build for one that does not. (In a worktree
    // `.git` is a file and HEAD is not read here: the commit may then be stale.)
    if let Some(branch) =
        std::fs::read_to_string(".git/HEAD").ok().and_then(|h| h.trim().strip_prefix("ref: ").map(str::to_string))
    {
        for path in [format!(".git/{branch}"), ".git/packed-refs".to_string()] {
            if std::path::Path::new(&path).exists() {
                println!("cargo::rerun-if-changed={path}");
            }
        }
    }
    // What a repro token records about the build that produced a failure: the git commit, or
    // where there is no .git (an image build), the commit the builder passes in.
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .or_else(|| {
            std::env::var("TESTBED_GIT_COMMIT").ok().filter(|c| !c.is_empty()).map(|c| c.chars().take(12).collect())
        })
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1).unwrap_or("unknown").to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo::rustc-env=TESTBED_GIT_COMMIT={commit}");
    println!("cargo::rustc-env=TESTBED_RUSTC_VERSION={version}");
}
