//! Following a job: `ultronctl run` (after submitting) and `ultronctl job
//! logs`. Each host's output is printed line by line as it arrives,
//! prefixed by the host (`web-1 | ...` for stdout, `web-1 ! ...` for
//! stderr), then its result line when it ends; on a terminal a status line
//! below says how many hosts run, finished and failed.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ultron8_proto::convert::status_from_wire;
use ultron8_proto::v1;

use crate::client::{Client, call_failed};
use crate::output::{Format, JobView, Output, status_name};

/// Exit status for "ran, but some host did not succeed (or was not run)".
pub const EXIT_SOME_FAILED: u8 = 3;
/// Exit status after Ctrl-C, as shells report a SIGINT death.
pub const EXIT_INTERRUPTED: u8 = 130;

/// How `run` follows its job.
#[derive(Debug, Clone, Copy, Default)]
pub struct FollowOptions {
    /// Results only: no output lines, no status line.
    pub quiet: bool,
    /// JSON or YAML at the end instead of lines as they come.
    pub data: Option<Format>,
    /// Offline hosts the target named do not count as failures.
    pub online_only: bool,
    /// Ctrl-C cancels the job without asking.
    pub cancel_on_interrupt: bool,
    /// Colour each host's final state (on a terminal only).
    pub colour: bool,
}

/// Output of one stream of one host, cut into lines: a partial line waits
/// for its end (or for the execution's end).
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    fn push(&mut self, data: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        lines
    }

    fn flush(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| {
            let line = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            line
        })
    }
}

/// Prints what an ended execution left without a final newline, on each
/// stream.
fn flush_lines(
    lines: &mut HashMap<(String, i32), Lines>,
    screen: &mut Screen,
    execution: &v1::Execution,
) {
    for stream in [
        v1::OutputStream::Stdout as i32,
        v1::OutputStream::Stderr as i32,
    ] {
        if let Some(rest) = lines
            .get_mut(&(execution.id.clone(), stream))
            .and_then(Lines::flush)
        {
            screen.line(&output_line(&execution.drone_id, stream, &rest));
        }
    }
}

/// The line printed for one line of a host's output.
pub fn output_line(drone: &str, stream: i32, line: &str) -> String {
    let mark = if stream == v1::OutputStream::Stderr as i32 {
        '!'
    } else {
        '|'
    };
    format!("{drone} {mark} {line}")
}

/// The line that ends a host: `web-1  succeeded  exit 0  0.42s`, and its
/// error on the next line, indented; the state coloured with `colour`.
pub fn result_lines(e: &v1::Execution, colour: bool) -> Vec<String> {
    let out = Output {
        format: Format::Table,
        colour,
        width: None,
    };
    let exit = e
        .exit_code
        .map(|c| format!("exit {c}"))
        .unwrap_or_else(|| "no exit code".into());
    let mut lines = vec![format!(
        "{}  {}  {}  {}",
        e.drone_id,
        out.state(&status_name(e.status)),
        exit,
        crate::output::seconds(e.duration_ms)
    )];
    for (truncated, label) in [
        (e.stdout_truncated, "stdout"),
        (e.stderr_truncated, "stderr"),
    ] {
        if truncated {
            lines.push(format!("  ({label} truncated at the drone's output cap)"));
        }
    }
    if !e.error.is_empty() {
        lines.push(format!("  error: {}", e.error));
    }
    lines
}

/// The live status line: `2 running, 3 done (1 failed), 4.2s`.
pub fn progress(hosts: usize, done: usize, failed: usize, elapsed: Duration) -> String {
    let waiting = hosts.saturating_sub(done);
    let failed = if failed > 0 {
        format!(" ({failed} failed)")
    } else {
        String::new()
    };
    format!(
        "{waiting} running, {done} done{failed}, {:.1}s",
        elapsed.as_secs_f64()
    )
}

/// The summary after the last host: what succeeded, what did not, and the
/// hosts the target named that were offline.
pub fn summary(succeeded: usize, not: usize, offline: usize) -> String {
    let mut text = format!("{succeeded} succeeded, {not} did not");
    if offline > 0 {
        text.push_str(&format!(", {offline} offline (not run)"));
    }
    text
}

/// Writes lines to stdout and the status line to stderr, never mixing a
/// half-drawn status line into the output.
struct Screen {
    status_line: bool,
    drawn: bool,
}

impl Screen {
    fn new(quiet: bool) -> Screen {
        Screen {
            // Only for a person watching: no status line when stderr goes
            // to a file or a pipe.
            status_line: !quiet && std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }

    fn line(&mut self, text: &str) {
        self.clear();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    fn note(&mut self, text: &str) {
        self.clear();
        eprintln!("{text}");
    }

    fn status(&mut self, text: &str) {
        if self.status_line {
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
            self.drawn = true;
        }
    }
}

/// What Ctrl-C led to.
enum Interrupt {
    /// Keep following (the operator declined to cancel).
    Continue,
    /// The job was asked to stop; follow it to its end.
    Canceled,
    /// Stop following; the job goes on.
    Detach,
}

/// Follows a submitted job to its end and returns the exit status.
pub async fn follow_run(
    client: &mut Client,
    job: v1::Job,
    options: FollowOptions,
) -> anyhow::Result<u8> {
    let hosts = job.executions.len();
    let offline = job.offline_drones.clone();
    let mut screen = Screen::new(options.quiet || options.data.is_some());
    if options.data.is_none() {
        screen.note(&format!("job {} on {hosts} drone(s)", job.id));
        for drone in &offline {
            screen.line(&format!("{drone}  offline, not run"));
        }
    }
    let mut events = client
        .follow_job(v1::FollowJobRequest {
            job_id: job.id.clone(),
            drone_id: String::new(),
            follow: true,
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    let started = Instant::now();
    let mut lines: HashMap<(String, i32), Lines> = HashMap::new();
    let mut finished: BTreeMap<String, v1::Execution> = BTreeMap::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut interrupted = false;
    let mut canceled = false;
    let failed_count = |finished: &BTreeMap<String, v1::Execution>| {
        finished
            .values()
            .filter(|e| e.status != v1::ExecutionStatus::Succeeded as i32)
            .count()
    };
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            _ = ticker.tick() => {
                screen.status(&progress(hosts, finished.len(), failed_count(&finished), started.elapsed()));
                continue;
            }
            _ = tokio::signal::ctrl_c() => {
                if interrupted {
                    // A second Ctrl-C: leave at once.
                    screen.note(&format!("stopped watching; see the job with: ultronctl job get {}", job.id));
                    return Ok(EXIT_INTERRUPTED);
                }
                interrupted = true;
                match interrupt(client, &job, &mut screen, options).await? {
                    Interrupt::Continue => {}
                    Interrupt::Canceled => canceled = true,
                    Interrupt::Detach => return Ok(EXIT_INTERRUPTED),
                }
                continue;
            }
        };
        match next {
            Some(Ok(v1::JobEvent {
                event: Some(v1::job_event::Event::Output(output)),
            })) => {
                if options.quiet || options.data.is_some() {
                    continue;
                }
                let key = (output.execution_id.clone(), output.stream);
                for line in lines.entry(key).or_default().push(&output.data) {
                    screen.line(&output_line(&output.drone_id, output.stream, &line));
                }
            }
            Some(Ok(v1::JobEvent {
                event: Some(v1::job_event::Event::Execution(execution)),
            })) => {
                let terminal = status_from_wire(execution.status)
                    .map(|s| s.is_terminal())
                    .unwrap_or(false);
                if !terminal || finished.contains_key(&execution.id) {
                    continue;
                }
                if options.data.is_none() {
                    flush_lines(&mut lines, &mut screen, &execution);
                    for line in result_lines(&execution, options.colour) {
                        screen.line(&line);
                    }
                }
                finished.insert(execution.id.clone(), execution);
            }
            Some(Ok(_)) => {}
            Some(Err(status)) => {
                screen.clear();
                return Err(call_failed(status)).map_err(|e| {
                    e.context(format!(
                        "stopped following job {}; the job goes on: ultronctl job get {}",
                        job.id, job.id
                    ))
                });
            }
            None => break,
        }
    }
    screen.clear();
    let failed = failed_count(&finished) + hosts.saturating_sub(finished.len());
    if let Some(format) = options.data {
        let final_job = client
            .get_job(v1::GetJobRequest { id: job.id.clone() })
            .await
            .map_err(call_failed)?
            .into_inner();
        Output::plain(format).data(&JobView::from(&final_job))?;
    } else {
        screen.note(&summary(hosts - failed, failed, offline.len()));
    }
    if canceled {
        screen.note(&format!("job {} canceled", job.id));
    }
    Ok(if interrupted {
        EXIT_INTERRUPTED
    } else if failed > 0 || (!offline.is_empty() && !options.online_only) {
        EXIT_SOME_FAILED
    } else {
        0
    })
}

/// The first Ctrl-C: cancel the job (asking first on a terminal, unless
/// `--cancel-on-interrupt`), or stop watching when nobody can be asked.
async fn interrupt(
    client: &mut Client,
    job: &v1::Job,
    screen: &mut Screen,
    options: FollowOptions,
) -> anyhow::Result<Interrupt> {
    let cancel = if options.cancel_on_interrupt {
        true
    } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        screen.clear();
        eprint!(
            "\nCancel job {} on its unfinished hosts? [y/N] (Ctrl-C again to stop watching) ",
            job.id
        );
        let _ = std::io::stderr().flush();
        let answer = tokio::select! {
            answer = read_answer() => answer,
            _ = tokio::signal::ctrl_c() => {
                eprintln!();
                screen.note(&format!("stopped watching; the job goes on: ultronctl job get {}", job.id));
                return Ok(Interrupt::Detach);
            }
        };
        if !answer {
            screen.note("not canceled; still following (Ctrl-C again to stop watching)");
            return Ok(Interrupt::Continue);
        }
        true
    } else {
        screen.note(&format!(
            "stopped watching; the job goes on: ultronctl job get {} (cancel it with: ultronctl job cancel {})",
            job.id, job.id
        ));
        return Ok(Interrupt::Detach);
    };
    if cancel {
        let answer = client
            .cancel_job(v1::CancelJobRequest {
                job_id: job.id.clone(),
                drone_id: String::new(),
            })
            .await
            .map_err(call_failed)?
            .into_inner();
        screen.note(&cancel_summary(&answer));
    }
    Ok(Interrupt::Canceled)
}

async fn read_answer() -> bool {
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await;
    matches!(line, Ok(Ok(line)) if matches!(line.trim(), "y" | "Y" | "yes"))
}

/// What a cancel did, in one line.
pub fn cancel_summary(answer: &v1::CancelJobResponse) -> String {
    let count = |outcome: v1::CancelOutcome| {
        answer
            .executions
            .iter()
            .filter(|e| e.outcome == outcome as i32)
            .count()
    };
    format!(
        "canceling: {} stopped before they started, {} being stopped on their drones, {} already finished",
        count(v1::CancelOutcome::Canceled),
        count(v1::CancelOutcome::Signalled),
        count(v1::CancelOutcome::AlreadyFinished)
    )
}

/// `ultronctl job logs`: the job's output so far, prefixed by host; with
/// `follow`, until every host has finished.
pub async fn logs(
    client: &mut Client,
    job_id: String,
    drone: Option<String>,
    follow: bool,
) -> anyhow::Result<u8> {
    let mut events = client
        .follow_job(v1::FollowJobRequest {
            job_id,
            drone_id: drone.unwrap_or_default(),
            follow,
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    let mut screen = Screen::new(true);
    let mut lines: HashMap<(String, i32), Lines> = HashMap::new();
    let mut drones: HashMap<String, String> = HashMap::new();
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(EXIT_INTERRUPTED),
        };
        match next {
            Some(Ok(v1::JobEvent {
                event: Some(v1::job_event::Event::Output(output)),
            })) => {
                drones.insert(output.execution_id.clone(), output.drone_id.clone());
                let key = (output.execution_id.clone(), output.stream);
                for line in lines.entry(key).or_default().push(&output.data) {
                    screen.line(&output_line(&output.drone_id, output.stream, &line));
                }
            }
            Some(Ok(v1::JobEvent {
                event: Some(v1::job_event::Event::Execution(execution)),
            })) => {
                let terminal = status_from_wire(execution.status)
                    .map(|s| s.is_terminal())
                    .unwrap_or(false);
                if terminal {
                    flush_lines(&mut lines, &mut screen, &execution);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(status)) => return Err(call_failed(status)),
            None => break,
        }
    }
    // Without --follow, a running host's last partial line.
    for ((execution, stream), buffer) in lines.iter_mut() {
        if let Some(rest) = buffer.flush() {
            let drone = drones.get(execution).cloned().unwrap_or_default();
            screen.line(&output_line(&drone, *stream, &rest));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_into_whole_lines_and_a_partial_one_waits() {
        let mut lines = Lines::default();
        assert_eq!(lines.push(b"one\ntw"), ["one"]);
        assert!(lines.push(b"o").is_empty());
        assert_eq!(lines.push(b"\nthree\n"), ["two", "three"]);
        assert_eq!(lines.flush(), None);
        lines.push(b"no newline");
        assert_eq!(lines.flush().as_deref(), Some("no newline"));
    }

    #[test]
    fn lines_are_prefixed_by_host_and_stream() {
        assert_eq!(
            output_line("web-1", v1::OutputStream::Stdout as i32, "hello"),
            "web-1 | hello"
        );
        assert_eq!(
            output_line("web-1", v1::OutputStream::Stderr as i32, "oops"),
            "web-1 ! oops"
        );
    }

    #[test]
    fn the_summary_names_offline_hosts_and_the_status_line_counts() {
        assert_eq!(summary(3, 0, 0), "3 succeeded, 0 did not");
        assert_eq!(
            summary(1, 0, 2),
            "1 succeeded, 0 did not, 2 offline (not run)"
        );
        assert_eq!(
            progress(5, 3, 1, Duration::from_millis(4200)),
            "2 running, 3 done (1 failed), 4.2s"
        );
    }

    #[test]
    fn a_result_line_says_status_exit_and_time_then_the_error() {
        let execution = v1::Execution {
            drone_id: "db-1".into(),
            status: v1::ExecutionStatus::Canceled as i32,
            duration_ms: 1250,
            error: "canceled; sent SIGTERM to process group 42".into(),
            ..Default::default()
        };
        assert_eq!(
            result_lines(&execution, false),
            [
                "db-1  canceled  no exit code  1.25s",
                "  error: canceled; sent SIGTERM to process group 42"
            ]
        );
    }
}
