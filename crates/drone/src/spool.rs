//! Execution results waiting for the hive, kept on disk until acknowledged.
//!
//! A command's result must outlive a hive outage and a drone restart: once
//! the journal says an execution finished, its result is the only record of
//! what happened on the host. So every result is written here first
//! ([`Spool::put`]), delivered from here ([`Spool::pending`]), and deleted
//! only after the hive acknowledged it ([`Spool::remove`]).
//!
//! - **Atomic and durable.** A report is written to a temporary file,
//!   fsynced, renamed to `<execution_id>.json` and the directory fsynced: after
//!   `put` returns, the report survives a crash, and a crash during `put`
//!   leaves either the old file or the new one, never a torn one.
//! - **At least once.** Delivery may repeat (a crash between the hive's ack
//!   and `remove`); the hive treats terminal states as final, so a duplicate
//!   report is harmless, whereas a lost one is not.
//! - **One bad file blocks nothing.** A file that cannot be parsed is moved
//!   aside to `<name>.corrupt` for a human to look at, with a warning, and
//!   the other reports are still delivered.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ultron8_core::ExecutionStatus;

use crate::journal::{remove_stale_temp_files, sync_dir, validate_execution_id, write_temp_file};

const REPORT_SUFFIX: &str = ".json";

/// An execution result as kept on disk; output is base64 in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpooledReport {
    pub execution_id: String,
    pub job_id: String,
    pub status: ExecutionStatus,
    pub exit_code: Option<i32>,
    #[serde(with = "base64_bytes")]
    pub stdout: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// Unix milliseconds, drone clock.
    pub started_at_ms: i64,
    /// Unix milliseconds, drone clock.
    pub finished_at_ms: i64,
    /// The rule of the drone's policy that refused to run it; absent in
    /// files spooled before policies existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_rule: Option<String>,
}

impl SpooledReport {
    /// The report of an execution that produced no output: refused, not
    /// started, or lost. Times are Unix milliseconds, drone clock.
    pub fn without_output(
        execution_id: &str,
        job_id: &str,
        status: ExecutionStatus,
        error: String,
        started_at_ms: i64,
        finished_at_ms: i64,
    ) -> SpooledReport {
        SpooledReport {
            execution_id: execution_id.to_string(),
            job_id: job_id.to_string(),
            status,
            exit_code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 0,
            error: Some(error),
            started_at_ms,
            finished_at_ms,
            policy_rule: None,
        }
    }
}

/// The directory of reports waiting for delivery; see the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens the spool in `dir`, creating the directory if needed.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        remove_stale_temp_files(dir);
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    /// Stores `report` atomically and durably, replacing any report already
    /// spooled for the same execution id.
    pub fn put(&self, report: &SpooledReport) -> io::Result<()> {
        validate_execution_id(&report.execution_id)?;
        let bytes = serde_json::to_vec(report).map_err(io::Error::other)?;
        let temp = write_temp_file(&self.dir, &bytes)?;
        if let Err(error) = fs::rename(&temp, self.report_path(&report.execution_id)) {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        sync_dir(&self.dir)
    }

    /// How many reports wait for delivery, without reading them: what the
    /// heartbeat reports.
    pub fn count(&self) -> io::Result<usize> {
        let mut count = 0;
        for dirent in fs::read_dir(&self.dir)? {
            if dirent?
                .file_name()
                .to_str()
                .is_some_and(|name| name.ends_with(REPORT_SUFFIX))
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Every report waiting for delivery, oldest (by `finished_at_ms`) first.
    ///
    /// A file that is not a valid report, or whose name does not match the
    /// execution id inside (it could never be removed), is moved aside to
    /// `<name>.corrupt` and skipped.
    pub fn pending(&self) -> io::Result<Vec<SpooledReport>> {
        let mut reports = Vec::new();
        for dirent in fs::read_dir(&self.dir)? {
            let dirent = dirent?;
            let name = dirent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(REPORT_SUFFIX) else {
                continue;
            };
            let path = dirent.path();
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                // Removed since the directory was listed.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                // Not known to be corrupt (a transient I/O error, say): leave
                // it for the next attempt.
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot read a spooled report; skipping it");
                    continue;
                }
            };
            match serde_json::from_slice::<SpooledReport>(&bytes) {
                Ok(report) if report.execution_id == stem => reports.push(report),
                Ok(report) => {
                    let problem = format!("it holds execution {:?}", report.execution_id);
                    self.move_aside(&path, name, &problem);
                }
                Err(error) => self.move_aside(&path, name, &error.to_string()),
            }
        }
        reports.sort_by(|a, b| {
            a.finished_at_ms
                .cmp(&b.finished_at_ms)
                .then_with(|| a.execution_id.cmp(&b.execution_id))
        });
        Ok(reports)
    }

    /// Deletes the report of `execution_id` after the hive acknowledged it.
    /// Removing a report that is not there is not an error: acks may repeat.
    pub fn remove(&self, execution_id: &str) -> io::Result<()> {
        validate_execution_id(execution_id)?;
        match fs::remove_file(self.report_path(execution_id)) {
            // No directory fsync: if the removal is lost in a crash, the
            // report is delivered again, which the hive tolerates.
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn report_path(&self, execution_id: &str) -> PathBuf {
        self.dir.join(format!("{execution_id}{REPORT_SUFFIX}"))
    }

    fn move_aside(&self, path: &Path, name: &str, problem: &str) {
        let target = self.dir.join(format!("{name}.corrupt"));
        match fs::rename(path, &target) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                moved_to = %target.display(),
                problem,
                "corrupt spooled report moved aside"
            ),
            Err(error) => tracing::warn!(
                path = %path.display(),
                problem,
                %error,
                "corrupt spooled report could not be moved aside; skipping it"
            ),
        }
    }
}

/// `Vec<u8>` as a standard base64 string: command output is arbitrary bytes,
/// and a JSON array of numbers would triple its size.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}
