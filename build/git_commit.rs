//! Build script shared by the programs that report their build
//! (`ultron8-hive`, `ultronctl`): sets `ULTRON8_COMMIT` to the short commit
//! the binary is built from, `unknown` outside a git checkout. A packager
//! building from a tarball sets `ULTRON8_COMMIT` in the environment.
//!
//! It reruns when HEAD moves, so a binary never reports a commit it was not
//! built from. Only these leaf crates carry it: the libraries below them
//! do not rebuild on every commit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ULTRON8_COMMIT");
    let commit = std::env::var("ULTRON8_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=ULTRON8_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    if let Some(git_dir) = git_dir() {
        // HEAD names a branch; the branch's ref file (or packed-refs)
        // moves on commit. Only existing files are watched: cargo reruns
        // a script that watches a missing one on every build.
        let mut watched = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
        if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD"))
            && let Some(reference) = head.trim().strip_prefix("ref: ")
        {
            watched.push(git_dir.join(reference));
        }
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!commit.is_empty()).then_some(commit)
}

fn git_dir() -> Option<PathBuf> {
    let output = Command::new("git")
        .args(["rev-parse", "--absolute-git-dir"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| Path::new(String::from_utf8_lossy(&output.stdout).trim()).to_path_buf())
}
