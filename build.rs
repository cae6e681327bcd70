//! Gives `--version` and `marksync_build_info` the commit when the crate is built from its own git
//! checkout (`cargo build`, `cargo install --git`). `MARKSYNC_BUILD_COMMIT`, when set, wins (the
//! container and release builds set it); outside a checkout of this crate the commit stays
//! `unknown`, never a parent repository's.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then_some(())?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=MARKSYNC_BUILD_COMMIT");
    if std::env::var_os("MARKSYNC_BUILD_COMMIT").is_some() {
        return;
    }
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let ours = git(&["rev-parse", "--show-toplevel"])
        .and_then(|top| {
            Some(Path::new(&top).canonicalize().ok()? == Path::new(&manifest).canonicalize().ok()?)
        })
        .unwrap_or(false);
    if !ours {
        return;
    }
    // Built again when HEAD moves: HEAD itself, the branch it names, and packed refs.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) =
            git(&["rev-parse", "--git-path", &name]).filter(|p| Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=MARKSYNC_BUILD_COMMIT={commit}");
    }
}
