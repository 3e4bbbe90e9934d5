//! A pack as a directory, as `ultronctl pack install DIR` and `pack
//! validate` read it. The input is a readable bundle of files:
//!
//! ```text
//! === pack.yaml
//! name: demo
//! === actions/a.yaml
//! ...
//! === link -> actions/a.yaml
//! ```
//!
//! Each `=== PATH` line starts a file holding the lines up to the next;
//! `=== PATH -> TARGET` makes a symbolic link instead, its target as
//! written (outside the directory too: the reader must refuse those). The
//! files are written into a fresh temporary directory, which is read with
//! `ultron8_pack::read_dir` and loaded.
#![no_main]

use std::fs;
use std::path::{Component, Path};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ultron8_pack::{Pack, load, read_dir};

mod packs;

static INSTALLED: LazyLock<Vec<Pack>> = LazyLock::new(packs::installed);

/// Enough for any real pack; more only slows the fuzzer down.
const MAX_ENTRIES: usize = 64;

enum Entry<'a> {
    File(&'a str, Vec<u8>),
    Link(&'a str, &'a str),
}

fn bundle(text: &str) -> Vec<Entry<'_>> {
    let mut entries = Vec::new();
    let mut current: Option<(&str, Vec<u8>)> = None;
    for line in text.split_inclusive('\n') {
        if let Some(header) = line.strip_prefix("=== ") {
            if let Some((path, content)) = current.take() {
                entries.push(Entry::File(path, content));
            }
            let header = header.trim_end_matches('\n');
            match header.split_once(" -> ") {
                Some((path, target)) => entries.push(Entry::Link(path, target)),
                None => current = Some((header, Vec::new())),
            }
        } else if let Some((_, content)) = current.as_mut() {
            content.extend_from_slice(line.as_bytes());
        }
    }
    if let Some((path, content)) = current {
        entries.push(Entry::File(path, content));
    }
    entries.truncate(MAX_ENTRIES);
    entries
}

/// Only plain relative paths are written: the fuzzer must not write
/// outside its directory, whatever the bundle says.
fn plain(path: &str) -> bool {
    !path.is_empty()
        && path.len() < 200
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Creates `dir` and its missing parents under `root`, refusing to pass
/// through anything that is not a real directory (a link made earlier
/// could point anywhere).
fn make_dirs(root: &Path, dir: &Path) -> bool {
    let mut at = root.to_path_buf();
    for component in dir.components() {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return false,
            Err(_) => {
                if fs::create_dir(&at).is_err() {
                    return false;
                }
            }
        }
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let entries = bundle(text);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();
    // Files first, links after, so that no file is written through a link.
    for entry in &entries {
        if let Entry::File(path, content) = entry {
            let relative = Path::new(path);
            if !plain(path) || !make_dirs(root, relative.parent().unwrap_or(Path::new(""))) {
                continue;
            }
            let full = root.join(relative);
            if fs::symlink_metadata(&full).is_err() {
                let _ = fs::write(&full, content);
            }
        }
    }
    for entry in &entries {
        if let Entry::Link(path, target) = entry {
            let relative = Path::new(path);
            if !plain(path)
                || target.is_empty()
                || target.contains('\0')
                || !make_dirs(root, relative.parent().unwrap_or(Path::new("")))
            {
                continue;
            }
            let _ = std::os::unix::fs::symlink(target, root.join(relative));
        }
    }
    let Ok(files) = read_dir(root) else {
        return;
    };
    for path in files.keys() {
        assert!(
            !path.starts_with('/') && !path.split('/').any(|c| c == ".." || c.is_empty()),
            "{path:?}"
        );
    }
    match load(&files, &*INSTALLED) {
        Ok(pack) => {
            let json = serde_json::to_vec(&pack).expect("a pack serializes");
            let back: Pack = serde_json::from_slice(&json).expect("a stored pack decodes");
            assert_eq!(back, pack);
        }
        Err(problems) => assert!(!problems.is_empty()),
    }
});
