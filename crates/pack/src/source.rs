//! The edge: a pack's files from a directory or a `.tar.gz`, the only I/O in
//! this crate. Both refuse what could reach outside the pack (absolute
//! paths, `..`, links out of it, devices) and enforce the same size limits,
//! so `load` only ever sees a bounded map of relative paths.
//!
//! Entries whose name starts with `.` (`.git/`, `.DS_Store`, editor swap
//! files) are skipped, at any depth.

use std::cell::Cell;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flate2::read::GzDecoder;
use tar::EntryType;

use crate::model::PackFiles;

/// How big a pack may be. The defaults fit any reasonable pack many times
/// over; they exist so that a mistaken path (`/`) or a hostile archive fails
/// fast with a clear message instead of filling memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files and directories, counted together.
    pub max_entries: usize,
    /// The sum of the files' sizes.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1000,
            max_total_bytes: 10 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("the pack has more than {limit} files and directories")]
    TooManyEntries { limit: usize },
    #[error("the pack's files add up to more than {} ({limit} bytes)", human_bytes(*limit))]
    TooLarge { limit: u64 },
    #[error("{path}: a symbolic link pointing outside the pack")]
    LinkEscapes { path: String },
    #[error("{path}: {what} are not allowed in a pack")]
    Unsupported { path: String, what: &'static str },
    #[error("{path:?}: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("{path}: appears twice in the archive")]
    Duplicate { path: String },
    #[error("not a readable .tar.gz: {0}")]
    Archive(#[source] io::Error),
}

fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Reads a pack from a directory with the default [`Limits`].
pub fn read_dir(path: &Path) -> Result<PackFiles, SourceError> {
    read_dir_with_limits(path, &Limits::default())
}

/// Reads a pack from a directory. Symbolic links to files inside the
/// directory are read as the file they point to; links to directories or out
/// of the directory are refused, as are devices, sockets and pipes.
pub fn read_dir_with_limits(path: &Path, limits: &Limits) -> Result<PackFiles, SourceError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Io { path, source }
    };
    let root = fs::canonicalize(path).map_err(io_err(path))?;
    if !fs::metadata(&root).map_err(io_err(&root))?.is_dir() {
        return Err(SourceError::NotADirectory(path.to_path_buf()));
    }

    let mut files = PackFiles::new();
    let mut budget = Budget::new(limits);
    let mut pending = vec![(root.clone(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let mut entries = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            entries.push(entry.map_err(io_err(&dir))?);
        }
        // Stable order, so the same directory always fails the same way.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let os_name = entry.file_name();
            let Some(name) = os_name.to_str() else {
                return Err(SourceError::UnsafePath {
                    path: format!("{prefix}/{}", os_name.to_string_lossy()),
                    reason: "file names must be UTF-8",
                });
            };
            if name.starts_with('.') {
                continue;
            }
            let relative = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            budget.entry()?;
            let full = entry.path();
            let meta = fs::symlink_metadata(&full).map_err(io_err(&full))?;
            let file_type = meta.file_type();
            if file_type.is_dir() {
                pending.push((full, relative));
            } else if file_type.is_file() {
                let content = read_file(&full, meta.len(), &mut budget)?;
                files.insert(relative, content);
            } else if file_type.is_symlink() {
                // Resolve fully (links to links too) and judge the result.
                let target = fs::canonicalize(&full).map_err(|_| SourceError::LinkEscapes {
                    path: relative.clone(),
                })?;
                if !target.starts_with(&root) {
                    return Err(SourceError::LinkEscapes { path: relative });
                }
                let target_meta = fs::metadata(&target).map_err(io_err(&target))?;
                if target_meta.is_dir() {
                    return Err(SourceError::Unsupported {
                        path: relative,
                        what: "symbolic links to directories",
                    });
                }
                if !target_meta.is_file() {
                    return Err(SourceError::Unsupported {
                        path: relative,
                        what: "devices, sockets and pipes",
                    });
                }
                let content = read_file(&target, target_meta.len(), &mut budget)?;
                files.insert(relative, content);
            } else {
                // Opening a FIFO would block; a device could be anything.
                return Err(SourceError::Unsupported {
                    path: relative,
                    what: "devices, sockets and pipes",
                });
            }
        }
    }
    Ok(files)
}

fn read_file(path: &Path, len: u64, budget: &mut Budget) -> Result<Vec<u8>, SourceError> {
    budget.check(len)?;
    let file = fs::File::open(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // The file may grow between stat and read: never take more than the
    // budget allows.
    let mut content = Vec::new();
    file.take(budget.remaining().saturating_add(1))
        .read_to_end(&mut content)
        .map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    budget.take(content.len() as u64)?;
    Ok(content)
}

/// Reads a pack from a `.tar.gz` with the default [`Limits`].
pub fn read_tarball(bytes: &[u8]) -> Result<PackFiles, SourceError> {
    read_tarball_with_limits(bytes, &Limits::default())
}

/// Reads a pack from a `.tar.gz`. Regular files and directories only; an
/// archive whose files all sit under one top-level directory (as `tar czf
/// linux-1.2.0.tar.gz linux-1.2.0/` or `git archive --prefix` make) has that
/// directory stripped.
pub fn read_tarball_with_limits(bytes: &[u8], limits: &Limits) -> Result<PackFiles, SourceError> {
    // Bound the decompressed stream, not just the files in it: a gzip bomb
    // of padding or skipped entries must stop as early as a large file.
    let exceeded = Rc::new(Cell::new(false));
    let overhead = (limits.max_entries as u64)
        .saturating_add(16)
        .saturating_mul(4096);
    let stream = Capped {
        inner: GzDecoder::new(bytes),
        remaining: limits.max_total_bytes.saturating_add(overhead),
        exceeded: Rc::clone(&exceeded),
    };
    let archive_err = |source: io::Error| {
        if exceeded.get() {
            SourceError::TooLarge {
                limit: limits.max_total_bytes,
            }
        } else {
            SourceError::Archive(source)
        }
    };

    let mut archive = tar::Archive::new(stream);
    let mut files = PackFiles::new();
    let mut budget = Budget::new(limits);
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            // `git archive` puts the commit id here; it is not a file.
            continue;
        }
        let raw = entry.path().map_err(archive_err)?;
        let Some(raw) = raw.to_str().map(str::to_string) else {
            return Err(SourceError::UnsafePath {
                path: raw.to_string_lossy().into_owned(),
                reason: "file names must be UTF-8",
            });
        };
        let path = normalize(&raw)?;
        match kind {
            EntryType::Regular | EntryType::Continuous => {}
            EntryType::Directory => {
                budget.entry()?;
                continue;
            }
            EntryType::Symlink | EntryType::Link => {
                return Err(SourceError::Unsupported {
                    path: raw,
                    what: "links",
                });
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(SourceError::Unsupported {
                    path: raw,
                    what: "devices and pipes",
                });
            }
            _ => {
                return Err(SourceError::Unsupported {
                    path: raw,
                    what: "archive entries other than files and directories",
                });
            }
        }
        budget.entry()?;
        let Some(path) = path else { continue };
        if path.split('/').any(|part| part.starts_with('.')) {
            continue;
        }
        let size = entry.header().size().map_err(archive_err)?;
        budget.check(size)?;
        let mut content = Vec::new();
        (&mut entry)
            .take(budget.remaining().saturating_add(1))
            .read_to_end(&mut content)
            .map_err(archive_err)?;
        budget.take(content.len() as u64)?;
        if files.insert(path.clone(), content).is_some() {
            return Err(SourceError::Duplicate { path });
        }
    }
    Ok(strip_single_top_directory(files))
}

/// A relative path with `/`, without `.` or empty parts; `None` for the
/// archive's root itself (`./`).
fn normalize(raw: &str) -> Result<Option<String>, SourceError> {
    let unsafe_path = |reason| SourceError::UnsafePath {
        path: raw.to_string(),
        reason,
    };
    if raw.starts_with('/') {
        return Err(unsafe_path("absolute paths are not allowed"));
    }
    if raw.contains('\\') {
        return Err(unsafe_path("backslashes are not allowed in paths"));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_path("`..` is not allowed in paths")),
            part => parts.push(part),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

fn strip_single_top_directory(files: PackFiles) -> PackFiles {
    let mut tops = files
        .keys()
        .map(|path| path.split_once('/').map(|(top, _)| top));
    let Some(Some(first)) = tops.next() else {
        return files;
    };
    // Only a directory holding the manifest is a prefix; otherwise the
    // layout is reported as it is, by `load`.
    if !tops.all(|top| top == Some(first)) || !files.contains_key(&format!("{first}/pack.yaml")) {
        return files;
    }
    let prefix_len = first.len() + 1;
    files
        .into_iter()
        .map(|(path, content)| (path[prefix_len..].to_string(), content))
        .collect()
}

/// Counts entries and bytes against the limits.
struct Budget {
    limits: Limits,
    entries: usize,
    bytes: u64,
}

impl Budget {
    fn new(limits: &Limits) -> Self {
        Budget {
            limits: *limits,
            entries: 0,
            bytes: 0,
        }
    }

    fn entry(&mut self) -> Result<(), SourceError> {
        self.entries = self.entries.saturating_add(1);
        if self.entries > self.limits.max_entries {
            return Err(SourceError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    fn remaining(&self) -> u64 {
        self.limits.max_total_bytes.saturating_sub(self.bytes)
    }

    fn check(&self, size: u64) -> Result<(), SourceError> {
        if size > self.remaining() {
            return Err(SourceError::TooLarge {
                limit: self.limits.max_total_bytes,
            });
        }
        Ok(())
    }

    fn take(&mut self, size: u64) -> Result<(), SourceError> {
        self.check(size)?;
        self.bytes += size;
        Ok(())
    }
}

/// A reader that fails once more than `remaining` bytes went through it,
/// and says so through `exceeded` (the tar reader wraps the error it sees).
struct Capped<R> {
    inner: R,
    remaining: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Only an error if there is in fact more to read.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded.set(true);
            return Err(io::Error::other("the archive is too large"));
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_relative_paths() {
        assert_eq!(
            normalize("a/b.yaml").ok().flatten().as_deref(),
            Some("a/b.yaml")
        );
        assert_eq!(normalize("./a//b").ok().flatten().as_deref(), Some("a/b"));
        assert_eq!(normalize("./").ok().flatten(), None);
        assert!(normalize("/etc/passwd").is_err());
        assert!(normalize("a/../../b").is_err());
        assert!(normalize("a\\b").is_err());
    }

    #[test]
    fn strips_one_common_top_directory_only() {
        let files = |paths: &[&str]| -> PackFiles {
            paths.iter().map(|p| (p.to_string(), Vec::new())).collect()
        };
        let stripped =
            strip_single_top_directory(files(&["linux-1.0/pack.yaml", "linux-1.0/actions/a.yaml"]));
        assert_eq!(
            stripped.keys().collect::<Vec<_>>(),
            ["actions/a.yaml", "pack.yaml"]
        );
        let kept = files(&["pack.yaml", "actions/a.yaml"]);
        assert_eq!(strip_single_top_directory(kept.clone()), kept);
        let kept = files(&["a/pack.yaml", "b/pack.yaml"]);
        assert_eq!(strip_single_top_directory(kept.clone()), kept);
        let kept = files(&["actions/a.yaml", "actions/b.yaml"]);
        assert_eq!(strip_single_top_directory(kept.clone()), kept);
    }

    #[test]
    fn limits_have_a_readable_message() {
        let e = SourceError::TooLarge {
            limit: 10 * 1024 * 1024,
        };
        assert_eq!(
            e.to_string(),
            "the pack's files add up to more than 10 MiB (10485760 bytes)"
        );
    }
}
