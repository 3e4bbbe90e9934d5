//! The executor against real processes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::sync::mpsc;
use ultron8_core::{ExecutionStatus, Program};
use ultron8_drone::executor::{
    DEFAULT_OUTPUT_LIMIT, DRAIN_DEADLINE, ExecOutcome, ExecSpec, OutputChunk, StreamKind, run,
    run_cancellable,
};

fn spec(program: Program) -> ExecSpec {
    ExecSpec {
        program,
        env: BTreeMap::new(),
        working_dir: None,
        timeout: Duration::from_secs(30),
        kill_grace: Duration::from_secs(2),
        output_limit: DEFAULT_OUTPUT_LIMIT,
        user: None,
    }
}

fn argv(args: &[&str]) -> Program {
    Program::Argv(args.iter().map(|arg| arg.to_string()).collect())
}

fn shell(script: &str) -> Program {
    Program::Shell(script.to_string())
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("utf-8 output")
}

/// Whether `pid` is dead. A killed process whose parent died is reparented to
/// init and may linger as a zombie until init reaps it: dead all the same.
fn is_gone(pid: Pid) -> bool {
    match kill(pid, None) {
        Err(Errno::ESRCH) => true,
        _ => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true),
    }
}

async fn wait_until_gone(pid: Pid) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if is_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    is_gone(pid)
}

async fn read_pid(path: &Path) -> Pid {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(content) = std::fs::read_to_string(path)
            && let Ok(pid) = content.trim().parse::<i32>()
        {
            return Pid::from_raw(pid);
        }
        assert!(
            Instant::now() < deadline,
            "no pid written to {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_succeeded(outcome: &ExecOutcome) {
    assert_eq!(outcome.status, ExecutionStatus::Succeeded, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.signal, None);
    assert_eq!(outcome.error, None);
}

#[tokio::test]
async fn argv_is_executed_without_a_shell() {
    let outcome = run(spec(argv(&["echo", "$HOME", "a;b", "`id`"])), None).await;
    assert_succeeded(&outcome);
    assert_eq!(text(&outcome.stdout), "$HOME a;b `id`\n");
    assert!(outcome.stderr.is_empty());
    assert!(!outcome.stdout_truncated && !outcome.stderr_truncated);
}

#[tokio::test]
async fn shell_mode_runs_the_script_with_sh() {
    let outcome = run(spec(shell("echo $((40 + 2)) | tr 4 x; echo err >&2")), None).await;
    assert_succeeded(&outcome);
    assert_eq!(text(&outcome.stdout), "x2\n");
    assert_eq!(text(&outcome.stderr), "err\n");
}

#[tokio::test]
async fn env_is_added_and_working_dir_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = spec(argv(&[
        "sh",
        "-c",
        "echo \"$U8_GREETING\"; pwd -P; test -n \"$PATH\" && echo has-path",
    ]));
    spec.env.insert("U8_GREETING".into(), "hello world".into());
    spec.working_dir = Some(dir.path().to_path_buf());
    let outcome = run(spec, None).await;
    assert_succeeded(&outcome);
    let canonical = dir.path().canonicalize().expect("canonicalize");
    // The drone's own environment (PATH) is kept, not replaced.
    assert_eq!(
        text(&outcome.stdout),
        format!("hello world\n{}\nhas-path\n", canonical.display())
    );
}

#[tokio::test]
async fn stdin_is_empty() {
    let outcome = run(spec(argv(&["wc", "-c"])), None).await;
    assert_succeeded(&outcome);
    assert_eq!(text(&outcome.stdout).trim(), "0");
}

#[tokio::test]
async fn a_non_zero_exit_fails() {
    let outcome = run(spec(shell("echo oops >&2; exit 3")), None).await;
    assert_eq!(outcome.status, ExecutionStatus::Failed);
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(outcome.signal, None);
    assert_eq!(text(&outcome.stderr), "oops\n");
    assert_eq!(outcome.error, None);
}

#[tokio::test]
async fn death_by_signal_fails_and_says_so() {
    let outcome = run(spec(shell("kill -KILL $$")), None).await;
    assert_eq!(outcome.status, ExecutionStatus::Failed);
    assert_eq!(outcome.exit_code, None);
    assert_eq!(outcome.signal, Some(9));
    let error = outcome.error.expect("an error");
    assert!(
        error.contains("signal 9") && error.contains("SIGKILL"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_command_fails_naming_it() {
    let outcome = run(spec(argv(&["ultron8-no-such-command", "--flag"])), None).await;
    assert_eq!(outcome.status, ExecutionStatus::Failed);
    assert_eq!(outcome.exit_code, None);
    assert_eq!(outcome.signal, None);
    let error = outcome.error.expect("an error");
    assert!(
        error.starts_with("cannot start `ultron8-no-such-command`: "),
        "{error}"
    );
    assert!(error.contains("No such file or directory"), "{error}");
}

#[tokio::test]
async fn a_missing_working_dir_is_named_as_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let mut spec = spec(argv(&["true"]));
    spec.working_dir = Some(missing.clone());
    let outcome = run(spec, None).await;
    assert_eq!(outcome.status, ExecutionStatus::Failed);
    let error = outcome.error.expect("an error");
    assert!(
        error.contains("working directory") && error.contains(&missing.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn odd_requests_fail_without_panicking() {
    for program in [
        argv(&[]),
        argv(&[""]),
        argv(&["echo\0nul"]),
        argv(&["echo", "nul\0inside"]),
        shell("\0"),
    ] {
        let outcome = run(spec(program.clone()), None).await;
        assert_eq!(
            outcome.status,
            ExecutionStatus::Failed,
            "{program:?}: {outcome:?}"
        );
        assert!(outcome.error.is_some(), "{program:?}");
    }
    let mut odd_env = spec(argv(&["true"]));
    odd_env.env.insert("BAD\0KEY".into(), "v".into());
    assert_eq!(run(odd_env, None).await.status, ExecutionStatus::Failed);

    let mut forever = spec(argv(&["true"]));
    forever.timeout = Duration::MAX;
    forever.kill_grace = Duration::MAX;
    forever.output_limit = usize::MAX;
    assert_succeeded(&run(forever, None).await);
}

#[tokio::test]
async fn output_is_capped_per_stream_and_flagged() {
    let outcome = run(spec(argv(&["head", "-c", "3000000", "/dev/zero"])), None).await;
    assert_succeeded(&outcome);
    assert_eq!(outcome.stdout.len(), DEFAULT_OUTPUT_LIMIT);
    assert!(outcome.stdout_truncated);
    assert!(!outcome.stderr_truncated);

    let mut exact = spec(shell("printf 12345; printf abc >&2"));
    exact.output_limit = 5;
    let outcome = run(exact, None).await;
    assert_succeeded(&outcome);
    assert_eq!(text(&outcome.stdout), "12345");
    assert!(
        !outcome.stdout_truncated,
        "exactly at the cap is not truncated"
    );
    assert_eq!(text(&outcome.stderr), "abc");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("grandchild.pid");
    let mut spec = spec(shell(&format!(
        "sleep 300 & echo $! > '{}'; sleep 300",
        pidfile.display()
    )));
    spec.timeout = Duration::from_secs(1);
    spec.kill_grace = Duration::from_secs(2);
    let started = Instant::now();
    let outcome = run(spec, None).await;
    assert_eq!(outcome.status, ExecutionStatus::TimedOut, "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(outcome.duration >= Duration::from_secs(1));
    let error = outcome.error.expect("an error");
    assert!(
        error.starts_with("timed out after 1s; sent SIGTERM"),
        "{error}"
    );
    assert!(error.contains("process group"), "{error}");
    assert_eq!(outcome.exit_code, None);
    assert_eq!(outcome.signal, Some(15));

    let grandchild = read_pid(&pidfile).await;
    assert!(
        wait_until_gone(grandchild).await,
        "grandchild {grandchild} survived the timeout"
    );
}

#[tokio::test]
async fn a_canceled_command_has_its_whole_process_group_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("grandchild.pid");
    let spec = spec(shell(&format!(
        "sleep 600 & echo $! > '{}'; echo started; sleep 600",
        pidfile.display()
    )));
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(run_cancellable(spec, None, cancel.clone(), None));
    let grandchild = read_pid(&pidfile).await;
    cancel.cancel();
    let outcome = running.await.expect("the run ends");
    assert_eq!(outcome.status, ExecutionStatus::Canceled, "{outcome:?}");
    assert_eq!(text(&outcome.stdout), "started\n");
    let error = outcome.error.expect("an error");
    assert!(error.starts_with("canceled; sent SIGTERM"), "{error}");
    assert!(
        wait_until_gone(grandchild).await,
        "grandchild {grandchild} survived the cancel"
    );
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
    let mut spec = spec(shell(
        "trap '' TERM; echo ready; sleep 300; echo not-reached",
    ));
    spec.timeout = Duration::from_millis(500);
    spec.kill_grace = Duration::from_millis(500);
    let outcome = run(spec, None).await;
    assert_eq!(outcome.status, ExecutionStatus::TimedOut, "{outcome:?}");
    assert_eq!(outcome.signal, Some(9));
    assert_eq!(text(&outcome.stdout), "ready\n");
    assert!(
        outcome.duration >= Duration::from_secs(1),
        "{:?}",
        outcome.duration
    );
    assert!(
        outcome.duration < Duration::from_secs(10),
        "{:?}",
        outcome.duration
    );
    let error = outcome.error.expect("an error");
    assert!(
        error.contains("sent SIGTERM, then SIGKILL to process group"),
        "{error}"
    );
}

#[tokio::test]
async fn background_children_holding_the_pipes_do_not_hang_the_executor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("background.pid");
    let spec = spec(shell(&format!(
        "sleep 300 & echo $! > '{}'; echo hi",
        pidfile.display()
    )));
    let started = Instant::now();
    let outcome = run(spec, None).await;
    let elapsed = started.elapsed();
    assert_eq!(outcome.status, ExecutionStatus::Succeeded, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(text(&outcome.stdout), "hi\n");
    assert!(
        elapsed >= DRAIN_DEADLINE && elapsed < DRAIN_DEADLINE + Duration::from_secs(5),
        "{elapsed:?}"
    );
    let error = outcome.error.expect("a note about the leftover");
    assert!(
        error.contains("background processes") && error.contains("SIGKILL"),
        "{error}"
    );

    let background = read_pid(&pidfile).await;
    assert!(
        wait_until_gone(background).await,
        "background child {background} survived"
    );
}

#[tokio::test]
async fn output_chunks_arrive_in_order_with_their_offsets() {
    let (sender, mut receiver) = mpsc::channel(1024);
    let script = "for i in 1 2 3 4 5; do echo line$i; sleep 0.02; done; printf e1 >&2; sleep 0.02; printf e2 >&2";
    let outcome = run(spec(shell(script)), Some(sender)).await;
    assert_succeeded(&outcome);

    let mut chunks: Vec<OutputChunk> = Vec::new();
    while let Some(chunk) = receiver.recv().await {
        chunks.push(chunk);
    }
    for (kind, captured) in [
        (StreamKind::Stdout, &outcome.stdout),
        (StreamKind::Stderr, &outcome.stderr),
    ] {
        let mut joined = Vec::new();
        for chunk in chunks.iter().filter(|chunk| chunk.stream == kind) {
            assert_eq!(
                chunk.offset,
                joined.len() as u64,
                "{kind:?} offsets must be contiguous"
            );
            assert!(!chunk.data.is_empty());
            joined.extend_from_slice(&chunk.data);
        }
        assert_eq!(&joined, captured, "{kind:?}");
    }
    assert_eq!(text(&outcome.stdout), "line1\nline2\nline3\nline4\nline5\n");
    assert!(
        chunks
            .iter()
            .filter(|chunk| chunk.stream == StreamKind::Stdout)
            .count()
            > 1
    );
}

#[tokio::test]
async fn only_the_captured_part_is_streamed() {
    let (sender, mut receiver) = mpsc::channel(1024);
    let mut spec = spec(argv(&["head", "-c", "100000", "/dev/zero"]));
    spec.output_limit = 1000;
    let outcome = run(spec, Some(sender)).await;
    assert_succeeded(&outcome);
    assert!(outcome.stdout_truncated);
    let mut streamed = 0;
    while let Some(chunk) = receiver.recv().await {
        streamed += chunk.data.len();
    }
    assert_eq!(streamed, 1000);
}

#[tokio::test]
async fn a_full_or_closed_channel_never_blocks_the_execution() {
    let (full, _unread) = mpsc::channel(1);
    let outcome = run(
        spec(argv(&["head", "-c", "3000000", "/dev/urandom"])),
        Some(full),
    )
    .await;
    assert_succeeded(&outcome);
    assert_eq!(outcome.stdout.len(), DEFAULT_OUTPUT_LIMIT);

    let (closed, receiver) = mpsc::channel(1);
    drop(receiver);
    let outcome = run(spec(shell("seq 1 10000")), Some(closed)).await;
    assert_succeeded(&outcome);
    assert!(text(&outcome.stdout).ends_with("9999\n10000\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_future_kills_the_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pids");
    let script = format!(
        "sleep 300 & echo $! > '{0}.tmp'; echo $$ >> '{0}.tmp'; mv '{0}.tmp' '{0}'; sleep 300",
        pidfile.display()
    );
    let execution = run(spec(shell(&script)), None);
    let pids = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(content) = std::fs::read_to_string(&pidfile) {
                return content;
            }
            assert!(Instant::now() < deadline, "the command never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let content = tokio::select! {
        outcome = execution => panic!("the command ended on its own: {outcome:?}"),
        content = pids => content,
    };
    // `execution` has been dropped by now.
    for pid in content
        .lines()
        .map(|line| Pid::from_raw(line.trim().parse().expect("a pid")))
    {
        assert!(
            wait_until_gone(pid).await,
            "{pid} survived the dropped execution"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_each_get_their_own_result() {
    let runs: Vec<_> = (0..24)
        .map(|code| {
            tokio::spawn(run(
                spec(shell(&format!(
                    "sleep 0.0{}; echo {code}; exit {code}",
                    code % 10
                ))),
                None,
            ))
        })
        .collect();
    for (code, handle) in runs.into_iter().enumerate() {
        let outcome = handle.await.expect("join");
        let code = i32::try_from(code).expect("small");
        assert_eq!(outcome.exit_code, Some(code), "{outcome:?}");
        assert_eq!(text(&outcome.stdout), format!("{code}\n"));
    }
}

#[test]
fn the_run_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let future = run(spec(argv(&["true"])), None);
    assert_send(&future);
}
