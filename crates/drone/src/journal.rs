//! At-most-once execution: every execution id is recorded durably *before*
//! its command runs.
//!
//! AMQP delivers at least once: a request may arrive again after a broker
//! restart, a lost ack or a drone crash. Running a remediation twice
//! (restarting a service twice, applying a migration twice) can be worse than
//! not running it, so the drone asks the journal first and only runs what
//! [`Journal::begin`] reports as [`Begin::Fresh`].
//!
//! The order of events makes the guarantee:
//!
//! 1. `begin` makes the entry durable (file and directory fsynced), then
//!    the command runs;
//! 2. the result goes to the spool (durably);
//! 3. `finish` marks the entry finished.
//!
//! A crash between 1 and 3 leaves an unfinished entry: at start the drone
//! lists them with [`Journal::unfinished`] and reports them as `lost`, because
//! whether the command ran, and how far, is unknown, and running it again is
//! exactly what must not happen.
//!
//! On disk, each execution is one small JSON file, `<execution_id>.json`.
//! It is written in full to a temporary file first and then hard-linked into
//! place: `link(2)` fails if the name exists, so it is as exclusive as
//! `O_EXCL`, and, unlike `O_CREAT|O_EXCL` followed by a write, a crash can
//! never leave an entry that exists but is empty. `finish` rewrites the entry
//! with `rename(2)`, which replaces it atomically, so the name is never absent
//! and a concurrent `begin` can never take it.
//!
//! Entries are kept after they finish, or a redelivery would run the command
//! again; [`Journal::prune_finished`] bounds their number. The age given to it
//! is therefore the window during which a redelivered request is still
//! recognised: keep it well above the broker's redelivery and message TTLs.
//!
//! A journal directory belongs to one drone process at a time.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const ENTRY_SUFFIX: &str = ".json";
const TEMP_PREFIX: &str = ".tmp-";

/// Whether an execution may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Recorded now, for the first time: run it.
    Fresh,
    /// Begun before: do not run it again. `finished: false` means it is
    /// running right now or was interrupted by a crash.
    AlreadySeen { finished: bool },
}

/// An execution that was begun but never finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub execution_id: String,
    /// Empty if the entry's content was damaged (see [`Journal::unfinished`]).
    pub job_id: String,
    pub begun_at: DateTime<Utc>,
    /// The command's process group, once it started.
    pub process: Option<ProcessRecord>,
}

/// Which process group an execution's command leads, and when its leader
/// started (in clock ticks since boot, `/proc/PID/stat` field 22): a pid is
/// reused, a pid with the same start time is the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pgid: i32,
    pub start_ticks: u64,
}

/// The file content. Milliseconds rather than a timestamp string keep the
/// format trivial to read back whatever the chrono version.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    execution_id: String,
    job_id: String,
    begun_at_ms: i64,
    #[serde(default)]
    finished_at_ms: Option<i64>,
    #[serde(default)]
    process: Option<ProcessRecord>,
}

/// The set of execution ids this drone has begun; see the module docs.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens the journal in `dir`, creating the directory if needed.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        remove_stale_temp_files(dir);
        Ok(Journal {
            dir: dir.to_path_buf(),
        })
    }

    /// Durably records that `execution_id` is about to run.
    ///
    /// Returns [`Begin::AlreadySeen`] if it was begun before, finished or not;
    /// the caller must then not run it. An error also means "do not run": the
    /// record may or may not have been made.
    pub fn begin(&self, execution_id: &str, job_id: &str) -> io::Result<Begin> {
        validate_execution_id(execution_id)?;
        let path = self.entry_path(execution_id);
        // Fast path for redeliveries, and it spares a temporary file.
        if path.exists() {
            return Ok(Begin::AlreadySeen {
                finished: self.is_finished(&path),
            });
        }
        let record = Record {
            execution_id: execution_id.to_string(),
            job_id: job_id.to_string(),
            begun_at_ms: Utc::now().timestamp_millis(),
            finished_at_ms: None,
            process: None,
        };
        let temp = write_temp_file(&self.dir, &serialize(&record)?)?;
        let linked = fs::hard_link(&temp, &path);
        // The entry, if linked, no longer depends on the temporary name.
        if let Err(error) = fs::remove_file(&temp) {
            tracing::warn!(path = %temp.display(), %error, "cannot remove a journal temporary file");
        }
        match linked {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(Begin::Fresh)
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(Begin::AlreadySeen {
                finished: self.is_finished(&path),
            }),
            Err(error) => Err(error),
        }
    }

    /// Durably marks `execution_id` finished; call it once its result is
    /// safely in the spool. Finishing twice is fine; finishing an id that was
    /// never begun is a `NotFound` error.
    /// Records the process group an unfinished execution's command leads,
    /// so that a drone restarted after dying can stop a command nobody
    /// supervises any more.
    pub fn record_process(&self, execution_id: &str, process: ProcessRecord) -> io::Result<()> {
        validate_execution_id(execution_id)?;
        let path = self.entry_path(execution_id);
        let record = read_record(&path)?;
        if record.finished_at_ms.is_some() {
            return Ok(());
        }
        let record = Record {
            process: Some(process),
            ..record
        };
        let temp = write_temp_file(&self.dir, &serialize(&record)?)?;
        if let Err(error) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        sync_dir(&self.dir)
    }

    pub fn finish(&self, execution_id: &str) -> io::Result<()> {
        validate_execution_id(execution_id)?;
        let path = self.entry_path(execution_id);
        let now = Utc::now().timestamp_millis();
        let record = match read_record(&path) {
            Ok(record) if record.finished_at_ms.is_some() => return Ok(()),
            Ok(record) => Record {
                finished_at_ms: Some(now),
                ..record
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("execution {execution_id} was never begun"),
                ));
            }
            // Damaged content: the entry still exists, so it can be finished;
            // what was lost cannot be recovered.
            Err(error) => {
                tracing::warn!(execution_id, %error, "journal entry is damaged; rewriting it as finished");
                Record {
                    execution_id: execution_id.to_string(),
                    job_id: String::new(),
                    begun_at_ms: now,
                    finished_at_ms: Some(now),
                    process: None,
                }
            }
        };
        let temp = write_temp_file(&self.dir, &serialize(&record)?)?;
        if let Err(error) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        sync_dir(&self.dir)
    }

    /// Executions begun but never finished: interrupted by a crash (or still
    /// running, if called while the drone runs commands; call it at start).
    ///
    /// An entry whose content cannot be read is still reported, with an
    /// empty `job_id` and its file's modification time, because the only
    /// safe assumption about it is that its command may have started.
    /// Sorted by `begun_at`, oldest first.
    pub fn unfinished(&self) -> io::Result<Vec<JournalEntry>> {
        let mut entries = Vec::new();
        for (execution_id, path) in self.entries()? {
            match read_record(&path) {
                Ok(record) if record.finished_at_ms.is_some() => {}
                Ok(record) => entries.push(JournalEntry {
                    execution_id,
                    job_id: record.job_id,
                    begun_at: from_millis(record.begun_at_ms),
                    process: record.process,
                }),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(%execution_id, %error, "journal entry is damaged; reporting it as unfinished");
                    let begun_at = fs::metadata(&path)
                        .and_then(|meta| meta.modified())
                        .map(DateTime::<Utc>::from)
                        .unwrap_or_else(|_| Utc::now());
                    entries.push(JournalEntry {
                        execution_id,
                        job_id: String::new(),
                        begun_at,
                        process: None,
                    });
                }
            }
        }
        entries.sort_by(|a, b| {
            a.begun_at
                .cmp(&b.begun_at)
                .then_with(|| a.execution_id.cmp(&b.execution_id))
        });
        Ok(entries)
    }

    /// Removes entries that finished more than `age` ago and returns how many.
    /// Their ids are forgotten: a redelivery after this would run again.
    pub fn prune_finished(&self, age: Duration) -> io::Result<usize> {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = Utc::now().timestamp_millis().saturating_sub(age_ms);
        let mut removed = 0;
        for (execution_id, path) in self.entries()? {
            let Ok(record) = read_record(&path) else {
                continue;
            };
            if record
                .finished_at_ms
                .is_some_and(|finished| finished < cutoff)
            {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => {
                        tracing::warn!(%execution_id, %error, "cannot prune a journal entry");
                    }
                }
            }
        }
        // No directory fsync: an entry that reappears after a crash is a
        // finished one, which is harmless and pruned next time.
        Ok(removed)
    }

    fn entry_path(&self, execution_id: &str) -> PathBuf {
        self.dir.join(format!("{execution_id}{ENTRY_SUFFIX}"))
    }

    /// `(execution_id, path)` of every entry; anything else in the directory
    /// is ignored.
    fn entries(&self) -> io::Result<Vec<(String, PathBuf)>> {
        let mut entries = Vec::new();
        for dirent in fs::read_dir(&self.dir)? {
            let dirent = dirent?;
            let name = dirent.file_name();
            let Some(execution_id) = name
                .to_str()
                .and_then(|name| name.strip_suffix(ENTRY_SUFFIX))
            else {
                continue;
            };
            if is_valid_execution_id(execution_id) {
                entries.push((execution_id.to_string(), dirent.path()));
            }
        }
        Ok(entries)
    }

    /// For a redelivery of an entry that exists; damaged content counts as
    /// unfinished, the conservative answer.
    fn is_finished(&self, path: &Path) -> bool {
        read_record(path).is_ok_and(|record| record.finished_at_ms.is_some())
    }
}

/// Checks that an execution id, which comes from the network, is safe to use
/// as a file name: 1 to 64 ASCII letters, digits or dashes (UUIDs fit). No
/// `/`, `.` or NUL can get through, so no id can name a path outside the
/// directory. Returns an `InvalidInput` error otherwise.
pub fn validate_execution_id(execution_id: &str) -> io::Result<()> {
    if is_valid_execution_id(execution_id) {
        Ok(())
    } else {
        let shown: String = execution_id.chars().take(80).collect();
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "invalid execution id {shown:?}: expected 1 to 64 ASCII letters, digits or dashes"
            ),
        ))
    }
}

fn is_valid_execution_id(execution_id: &str) -> bool {
    (1..=64).contains(&execution_id.len())
        && execution_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn serialize(record: &Record) -> io::Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(io::Error::other)
}

fn read_record(path: &Path) -> io::Result<Record> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Writes `bytes` to a new, uniquely named temporary file in `dir` and fsyncs
/// it, so that once it is linked or renamed into place its content is on disk.
pub(crate) fn write_temp_file(dir: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let path = dir.join(format!(
        "{TEMP_PREFIX}{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(path),
        Err(error) => {
            let _ = fs::remove_file(&path);
            Err(error)
        }
    }
}

/// Makes the directory's entries (a link, a rename) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Temporary files left by a crash between writing and linking/renaming;
/// they were never part of the journal or spool.
pub(crate) fn remove_stale_temp_files(dir: &Path) {
    let Ok(dirents) = fs::read_dir(dir) else {
        return;
    };
    for dirent in dirents.flatten() {
        let name = dirent.file_name();
        if name
            .to_str()
            .is_some_and(|name| name.starts_with(TEMP_PREFIX))
            && let Err(error) = fs::remove_file(dirent.path())
        {
            tracing::warn!(path = %dirent.path().display(), %error, "cannot remove a stale temporary file");
        }
    }
}
