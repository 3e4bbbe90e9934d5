//! Runs one command on the host, safely.
//!
//! The hive asks a drone to run commands on production hosts, so the executor
//! is built around what must never happen:
//!
//! - **No accidental shell.** [`Program::Argv`] is executed directly; only
//!   [`Program::Shell`] goes through `/bin/sh -c`. A `$HOME` or `;` in an argv
//!   element is passed through literally.
//! - **No runaway process trees.** The command runs in its own process group.
//!   On timeout the whole group gets SIGTERM, then, after `kill_grace`,
//!   SIGKILL, so children and grandchildren die with it. If the [`run`] future
//!   is dropped (the drone is shutting down, the task was aborted), a guard
//!   SIGKILLs the group as well.
//! - **No signalling a stranger.** The group leader is not reaped until the
//!   very end: its exit is observed with `waitid(WNOWAIT)`, which leaves it a
//!   zombie. A zombie keeps its pid, and so its process group id, from being
//!   reused, which makes every `killpg` here hit our group and nobody else's.
//! - **No hanging forever.** A command whose background children keep the
//!   output pipes open (`sleep 100 & echo hi`) would otherwise never reach
//!   EOF. After the leader exits, the output is drained for at most
//!   [`DRAIN_DEADLINE`]; then the group is killed and the executor returns.
//! - **No unbounded memory.** At most `output_limit` bytes per stream are kept;
//!   the rest is still read (so the child never blocks on a full pipe) but
//!   discarded, and the stream is flagged as truncated.
//! - **No blocking on the consumer.** Live output chunks are offered with
//!   `try_send`; a full or closed channel loses chunks, never the execution.
//!   The final [`ExecOutcome`] always carries the captured output.
//!
//! Failures to start are reported as a [`ExecutionStatus::Failed`] outcome
//! with an explanation, never as a panic or an `Err`: whatever the request
//! contained, the hive gets a result.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use ultron8_core::{ExecutionStatus, Program};

use crate::policy::RunAs;

/// The output cap callers use when the request does not name one.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;

/// How long output is still read after the command's main process exited.
/// Anything still holding the pipes open by then is a leftover background
/// process; its group is killed rather than letting the drone wait forever.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// How long to wait for the main process to die after SIGKILL. Only a process
/// stuck in an uninterruptible kernel call survives that long; the executor
/// reports it instead of waiting indefinitely.
const REAP_DEADLINE: Duration = Duration::from_secs(5);

/// After killing a group whose leftovers held the pipes, how long to wait for
/// the last bytes they wrote before giving up on them.
const POST_KILL_DRAIN: Duration = Duration::from_millis(250);

/// Safety net for exit detection: SIGCHLD normally wakes the executor, this
/// bounds the delay should a notification ever be missed.
const EXIT_POLL_FALLBACK: Duration = Duration::from_millis(500);

const READ_BUFFER: usize = 64 * 1024;

/// Why a command was stopped before it exited by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TimedOut,
    Canceled,
}

/// What to run and under which limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// [`Program::Argv`] is executed directly, without a shell;
    /// [`Program::Shell`] is run as `/bin/sh -c script`.
    pub program: Program,
    /// Added to (not replacing) the drone's environment.
    pub env: BTreeMap<String, String>,
    /// `None`: the drone's working directory.
    pub working_dir: Option<PathBuf>,
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL when the timeout is hit.
    pub kill_grace: Duration,
    /// Bytes kept per stream; see [`DEFAULT_OUTPUT_LIMIT`].
    pub output_limit: usize,
    /// The user to run as (the drone's `[policy]`); `None`: the drone's own.
    pub user: Option<RunAs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// A piece of captured output, sent while the command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: StreamKind,
    /// Position of `data` in the stream's captured output.
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The result of one [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// `Succeeded` (exit 0), `Failed` (non-zero exit, killed by a signal, or
    /// could not start) or `TimedOut`.
    pub status: ExecutionStatus,
    /// `None` when killed by a signal or never started.
    pub exit_code: Option<i32>,
    /// The signal that terminated the main process, if any.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration: Duration,
    /// Why the command could not start, was killed, or what else went wrong.
    pub error: Option<String>,
}

/// Runs the command in its own process group and waits for it, within the
/// limits of `spec`.
///
/// Captured output (only the part within the cap) is also sent, as produced,
/// to `output` if given; a full or closed channel drops chunks and never
/// blocks or fails the execution.
///
/// Dropping the returned future kills the command's process group.
pub async fn run(spec: ExecSpec, output: Option<mpsc::Sender<OutputChunk>>) -> ExecOutcome {
    run_cancellable(spec, output, CancellationToken::new(), None).await
}

/// [`run`], stopped early when `cancel` is cancelled: the process group
/// gets SIGTERM, then SIGKILL after `kill_grace`, as on a timeout, and the
/// outcome is `Canceled`.
///
/// `on_spawn` receives the command's process group id once it runs.
pub async fn run_cancellable(
    spec: ExecSpec,
    output: Option<mpsc::Sender<OutputChunk>>,
    cancel: CancellationToken,
    on_spawn: Option<tokio::sync::oneshot::Sender<i32>>,
) -> ExecOutcome {
    let started = Instant::now();
    let (program, args): (&str, Vec<&str>) = match &spec.program {
        Program::Argv(argv) => match argv.split_first() {
            Some((program, args)) => (program.as_str(), args.iter().map(String::as_str).collect()),
            None => return not_started("cannot start: the argv is empty".to_string(), started),
        },
        Program::Shell(script) => ("/bin/sh", vec!["-c", script.as_str()]),
        // The runtime resolves scripts to a verified local file first; the
        // executor never fetches anything.
        Program::Script { name, .. } => {
            return not_started(
                format!("cannot start script `{name}`: it was not fetched"),
                started,
            );
        }
    };

    let mut command = Command::new(program);
    command
        .args(&args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Killing the leader alone would leave its children running; the
        // group guard below kills the whole group instead.
        .kill_on_drop(false);
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    if let Some(user) = &spec.user {
        // After the request's environment: a command run as a user sees
        // that user's home and name, as it would after logging in.
        command
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
        if user.switch {
            // The child sets its gid, then its uid, before exec. With a
            // uid and no explicit groups, the standard library also drops
            // every supplementary group (root's among them); setting the
            // user's own needs `CommandExt::groups`, not stable yet, so the
            // command runs with its primary group only.
            command.uid(user.uid).gid(user.gid);
        }
    }

    // Registered before the spawn, so the child's exit cannot slip in between
    // the spawn and the first wait. Without it, exit is detected by polling.
    let sigchld = match signal(SignalKind::child()) {
        Ok(stream) => Some(stream),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGCHLD; polling for command exit");
            None
        }
    };

    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return not_started(
                spawn_error(program, spec.working_dir.as_deref(), &error),
                started,
            );
        }
    };
    let Some(pgid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
    else {
        // Cannot happen for a freshly spawned child; without a pid there is no
        // group to supervise, so make sure the child goes away.
        let _ = child.start_kill();
        return not_started(format!("cannot start `{program}`: no process id"), started);
    };
    if let Some(on_spawn) = on_spawn {
        let _ = on_spawn.send(pgid.as_raw());
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut group = ProcessGroup {
        child,
        pgid,
        reaped: false,
    };
    let mut exit = ExitWatch { pid: pgid, sigchld };

    let mut stdout_capture = Capture::new(spec.output_limit);
    let mut stderr_capture = Capture::new(spec.output_limit);
    let mut notes: Vec<String> = Vec::new();
    // Why the group was stopped before it exited, if it was.
    let mut stopped: Option<Stop> = None;
    let mut gave_up = false;
    {
        let stdout_pump = pump(
            stdout,
            StreamKind::Stdout,
            &mut stdout_capture,
            output.clone(),
        );
        let stderr_pump = pump(stderr, StreamKind::Stderr, &mut stderr_capture, output);
        let mut readers = Box::pin(async move {
            tokio::join!(stdout_pump, stderr_pump);
        });
        let mut readers_done = false;

        // Run until the main process exits or the time is up, reading output
        // all along so the child never blocks on a full pipe.
        let deadline = tokio::time::sleep(spec.timeout);
        tokio::pin!(deadline);
        let mut leader_exited = false;
        loop {
            tokio::select! {
                biased;
                () = &mut readers, if !readers_done => readers_done = true,
                () = exit.exited() => {
                    leader_exited = true;
                    break;
                }
                () = &mut deadline => {
                    stopped = Some(Stop::TimedOut);
                    break;
                }
                () = cancel.cancelled() => {
                    stopped = Some(Stop::Canceled);
                    break;
                }
            }
        }

        if let Some(stop) = stopped {
            let why = match stop {
                Stop::TimedOut => format!("timed out after {:?}", spec.timeout),
                Stop::Canceled => "canceled".to_string(),
            };
            send_to_group(pgid, Signal::SIGTERM);
            // The grace is for the whole tree: wait for the leader to exit and
            // for every pipe holder to let go, whichever comes last.
            let grace = tokio::time::sleep(spec.kill_grace);
            tokio::pin!(grace);
            while !(leader_exited && readers_done) {
                tokio::select! {
                    biased;
                    () = &mut readers, if !readers_done => readers_done = true,
                    () = exit.exited(), if !leader_exited => leader_exited = true,
                    () = &mut grace => break,
                }
            }
            let survivors = !(leader_exited && readers_done);
            // Also sweeps members that closed their pipes and ignored SIGTERM;
            // harmless when the group is already gone.
            send_to_group(pgid, Signal::SIGKILL);
            notes.push(if survivors {
                format!("{why}; sent SIGTERM, then SIGKILL to process group {pgid}")
            } else {
                format!("{why}; sent SIGTERM to process group {pgid}")
            });
            if !leader_exited {
                let reap_deadline = tokio::time::sleep(REAP_DEADLINE);
                tokio::pin!(reap_deadline);
                loop {
                    tokio::select! {
                        biased;
                        () = &mut readers, if !readers_done => readers_done = true,
                        () = exit.exited() => {
                            leader_exited = true;
                            break;
                        }
                        () = &mut reap_deadline => break,
                    }
                }
                if !leader_exited {
                    gave_up = true;
                    notes.push(format!(
                        "process {pgid} did not exit {REAP_DEADLINE:?} after SIGKILL; giving up on it"
                    ));
                }
            }
        }

        // Once the leader is gone, whatever still holds the pipes is a
        // leftover; give it a bounded time to finish writing.
        let leftovers = leader_exited
            && !readers_done
            && tokio::time::timeout(DRAIN_DEADLINE, &mut readers)
                .await
                .is_err();
        if leftovers {
            if stopped.is_none() {
                send_to_group(pgid, Signal::SIGKILL);
                notes.push(format!(
                    "the command exited but its output was still open {DRAIN_DEADLINE:?} later \
                     (background processes?); sent SIGKILL to process group {pgid}"
                ));
            }
            // Pipe holders outside the group (daemons that called setsid)
            // are not ours to kill: keep what they wrote so far and leave.
            let _ = tokio::time::timeout(POST_KILL_DRAIN, &mut readers).await;
        }
    }

    let exit_status = if exit.has_exited() {
        group.reap().await
    } else {
        None
    };
    let (exit_code, signal) = match exit_status {
        Some(status) => (status.code(), status.signal()),
        None => (None, None),
    };
    if exit_status.is_none() && !gave_up {
        notes.push(format!(
            "the exit status of process {pgid} could not be collected"
        ));
    }
    let status = if stopped == Some(Stop::TimedOut) {
        ExecutionStatus::TimedOut
    } else if stopped == Some(Stop::Canceled) {
        ExecutionStatus::Canceled
    } else if exit_code == Some(0) {
        ExecutionStatus::Succeeded
    } else {
        ExecutionStatus::Failed
    };
    if let Some(signal) = signal.filter(|_| stopped.is_none()) {
        // Put first: it is the reason the command failed.
        notes.insert(
            0,
            format!("terminated by signal {signal}{}", signal_name(signal)),
        );
    }

    ExecOutcome {
        status,
        exit_code,
        signal,
        stdout: stdout_capture.data,
        stderr: stderr_capture.data,
        stdout_truncated: stdout_capture.truncated,
        stderr_truncated: stderr_capture.truncated,
        duration: started.elapsed(),
        error: if notes.is_empty() {
            None
        } else {
            Some(notes.join("; "))
        },
    }
}

fn not_started(error: String, started: Instant) -> ExecOutcome {
    ExecOutcome {
        status: ExecutionStatus::Failed,
        exit_code: None,
        signal: None,
        stdout: Vec::new(),
        stderr: Vec::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        duration: started.elapsed(),
        error: Some(error),
    }
}

/// A missing working directory and a missing program both surface as ENOENT
/// from the spawn; tell the operator which one it was.
fn spawn_error(program: &str, working_dir: Option<&Path>, error: &std::io::Error) -> String {
    if let Some(dir) = working_dir {
        match std::fs::metadata(dir) {
            Err(dir_error) => {
                return format!(
                    "cannot start `{program}`: working directory `{}`: {dir_error}",
                    dir.display()
                );
            }
            Ok(meta) if !meta.is_dir() => {
                return format!(
                    "cannot start `{program}`: working directory `{}` is not a directory",
                    dir.display()
                );
            }
            Ok(_) => {}
        }
    }
    format!("cannot start `{program}`: {error}")
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| format!(" ({})", s.as_str()))
        .unwrap_or_default()
}

fn send_to_group(pgid: Pid, signal: Signal) {
    // ESRCH only means the group is already empty.
    if let Err(error) = killpg(pgid, signal)
        && error != Errno::ESRCH
    {
        tracing::warn!(%pgid, %signal, %error, "cannot signal the command's process group");
    }
}

/// Owns the child and kills its whole process group if dropped before the
/// leader was reaped, i.e. when the [`run`] future is dropped mid-way.
///
/// The child is a field so that it drops *after* `Drop::drop` ran: tokio reaps
/// an exited child when it is dropped, and once the leader is reaped its pgid
/// may be recycled, so the group must be signalled first.
struct ProcessGroup {
    child: Child,
    pgid: Pid,
    reaped: bool,
}

impl ProcessGroup {
    /// Collects the exit status of a leader known to have exited.
    async fn reap(&mut self) -> Option<ExitStatus> {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            // Not actually exited (exit detection fell back to guessing after
            // an unexpected waitid error): make sure it is, then wait.
            Ok(None) => {
                send_to_group(self.pgid, Signal::SIGKILL);
                tokio::time::timeout(REAP_DEADLINE, self.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(error) => {
                tracing::warn!(pgid = %self.pgid, %error, "cannot collect the command's exit status");
                None
            }
        };
        self.reaped = status.is_some();
        status
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.reaped {
            send_to_group(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Observes the leader's exit without reaping it (see the module docs).
struct ExitWatch {
    pid: Pid,
    sigchld: Option<tokio::signal::unix::Signal>,
}

impl ExitWatch {
    /// Resolves once the leader has exited. Cancel safe.
    async fn exited(&mut self) {
        loop {
            if self.has_exited() {
                return;
            }
            match &mut self.sigchld {
                Some(sigchld) => {
                    tokio::select! {
                        received = sigchld.recv() => {
                            if received.is_none() {
                                // The signal driver is gone; poll from now on.
                                self.sigchld = None;
                            }
                        }
                        () = tokio::time::sleep(EXIT_POLL_FALLBACK) => {}
                    }
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn has_exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        loop {
            match waitid(Id::Pid(self.pid), flags) {
                Ok(WaitStatus::StillAlive) => return false,
                Ok(_) => return true,
                Err(Errno::EINTR) => continue,
                // EINVAL: nix cannot decode the status (e.g. killed by a
                // real-time signal), but there is one, so it exited. ECHILD:
                // already reaped elsewhere; nothing left to wait for either.
                Err(_) => return true,
            }
        }
    }
}

/// The kept part of one output stream.
struct Capture {
    data: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capture {
    fn new(limit: usize) -> Capture {
        // Not `with_capacity(limit)`: the limit comes from the request and
        // most commands print far less.
        Capture {
            data: Vec::new(),
            limit,
            truncated: false,
        }
    }

    /// Keeps what fits under the limit; returns the offset and the kept part.
    fn push<'a>(&mut self, bytes: &'a [u8]) -> (u64, &'a [u8]) {
        let offset = self.data.len() as u64;
        let room = self.limit.saturating_sub(self.data.len());
        let kept = &bytes[..bytes.len().min(room)];
        if kept.len() < bytes.len() {
            self.truncated = true;
        }
        self.data.extend_from_slice(kept);
        (offset, kept)
    }
}

/// Reads a stream to EOF, keeping what fits and forwarding it to `live`.
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    stream: StreamKind,
    capture: &mut Capture,
    mut live: Option<mpsc::Sender<OutputChunk>>,
) {
    let Some(mut reader) = reader else { return };
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        let read = match reader.read(&mut buffer).await {
            Ok(0) => return,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::warn!(?stream, %error, "cannot read the command's output");
                return;
            }
        };
        // Past the cap, reading goes on so the child never blocks on a full
        // pipe, but nothing is kept.
        let (offset, kept) = capture.push(&buffer[..read]);
        if kept.is_empty() {
            continue;
        }
        if let Some(sender) = &live {
            let chunk = OutputChunk {
                stream,
                offset,
                data: kept.to_vec(),
            };
            if let Err(TrySendError::Closed(_)) = sender.try_send(chunk) {
                live = None;
            }
        }
    }
}
