//! Where the example binaries the end-to-end tests run live.

use std::path::PathBuf;

/// Path of example `name` of this workspace, built by `cargo test` (which builds examples)
/// or `cargo build --examples`, in the same profile as the running test.
pub fn example(name: &str) -> anyhow::Result<PathBuf> {
    let path = example_dir()?.join(name);
    if !path.exists() {
        anyhow::bail!(
            "{} not built — run `cargo build --workspace --examples` (cargo test builds them too)",
            path.display()
        );
    }
    Ok(path)
}

/// `target/<profile>/examples` of the running test.
fn example_dir() -> anyhow::Result<PathBuf> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    // The running test binary lives in target/<profile>/deps/.
    let profile = std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.parent()?
                .parent()?
                .file_name()?
                .to_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "debug".into());
    Ok(target.join(profile).join("examples"))
}

/// Path of binary `name` of this workspace (a `[[bin]]` target, e.g. `lagbalance-agent`), built
/// by `cargo test --workspace` or `cargo build --workspace`, in the running test's profile.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let examples = example_dir()?;
    let path = examples
        .parent()
        .map(|p| p.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    if !path.exists() {
        anyhow::bail!(
            "{} not built — run `cargo build --workspace`",
            path.display()
        );
    }
    Ok(path)
}
