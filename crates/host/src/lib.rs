//! What the hive and the drone binaries both do on their host: set up
//! logging, stop cleanly on SIGINT/SIGTERM, and write files that must never
//! be seen half-written (certificates, keys, configuration).

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tokio_util::sync::CancellationToken;

pub mod process;

/// Logs to stderr as text or JSON; the level comes from `ULTRON8_LOG`
/// (e.g. `info,ultron8_hive=debug`), default `info`. Text is coloured
/// only on a terminal and without `NO_COLOR`: a journal or a log file gets
/// no escape codes.
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ULTRON8_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = colour_allowed(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Whether to colour output: on a terminal, unless `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn colour_allowed(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// A token cancelled at the first SIGINT (Ctrl-C) or SIGTERM (systemd).
///
/// After that first signal the process has `grace` to stop cleanly: if it
/// is still running then, it exits (status 0: the stop was asked for),
/// saying so. A second signal exits at once, with status 130.
pub fn shutdown_on_signal(grace: std::time::Duration) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => Some(term),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops cleanly");
                None
            }
        };
        let signal = async |term: &mut Option<tokio::signal::unix::Signal>| match term {
            Some(term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        signal(&mut term).await;
        tracing::info!(
            grace = %humantime::format_duration(grace),
            "shutting down; a second signal stops at once"
        );
        token.cancel();
        tokio::select! {
            _ = signal(&mut term) => {
                tracing::warn!("second signal: stopping now");
                std::process::exit(130);
            }
            _ = tokio::time::sleep(grace) => {
                tracing::warn!(
                    grace = %humantime::format_duration(grace),
                    "did not stop within the shutdown grace; stopping now"
                );
                std::process::exit(0);
            }
        }
    });
    shutdown
}

/// The default for `--shutdown-grace`.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "10s";

/// Replaces `path` atomically: readers see the old contents or the new,
/// never a torn file, and the new contents are on disk before the rename.
/// `mode` applies to a newly created file (0o600 for anything secret).
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some(OsStr::new(""))));
        assert!(!colour_allowed(true, Some(OsStr::new("1"))));
        assert!(!colour_allowed(false, None));
    }

    #[test]
    fn replaces_contents_and_sets_the_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_atomically(&path, b"old", 0o600).expect("write");
        write_atomically(&path, b"new", 0o600).expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let err =
            write_atomically(Path::new("/nonexistent/dir/file"), b"x", 0o600).expect_err("no dir");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
