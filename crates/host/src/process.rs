//! This process's own resource use, read from `/proc`, for the standard
//! Prometheus `process_*` metrics.
//!
//! Written by hand rather than with the `procfs` crate: six numbers from
//! two files do not justify its dependency tree, and the parsing below is
//! pure and tested.

use std::io;

use nix::sys::resource::{Resource, getrlimit};
use nix::unistd::{SysconfVar, sysconf};

/// What `process_*` metrics report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    /// The soft limit on open files.
    pub max_fds: u64,
}

/// Reads this process's figures. Linux only (it reads `/proc`).
pub fn process_stats() -> io::Result<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let boot_time = boot_time_seconds(&std::fs::read_to_string("/proc/stat")?)
        .ok_or_else(|| invalid("/proc/stat has no btime line"))?;
    let ticks = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    let page_size = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .filter(|p| *p > 0)
        .unwrap_or(4096) as u64;
    let fields = parse_stat(&stat).ok_or_else(|| invalid("cannot parse /proc/self/stat"))?;
    let open_fds = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    let max_fds = getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    Ok(ProcessStats {
        cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
        resident_memory_bytes: fields.rss_pages.saturating_mul(page_size),
        virtual_memory_bytes: fields.vsize_bytes,
        start_time_seconds: boot_time as f64 + fields.start_ticks as f64 / ticks,
        open_fds,
        max_fds,
    })
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`
/// field 22): with the pid, it names one process across pid reuse.
pub fn process_start_ticks(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat)
        .map(|fields| fields.start_ticks)
        .ok_or_else(|| invalid("cannot parse /proc/PID/stat"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The fields of `/proc/PID/stat` the metrics need, in their raw units.
#[derive(Debug, PartialEq, Eq)]
struct StatFields {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

/// Parses `/proc/PID/stat` (see proc(5)). The command name (field 2) is
/// in parentheses and may itself hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<StatFields> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The `btime` line of `/proc/stat`: when the host booted, in seconds
/// since the epoch.
fn boot_time_seconds(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_after_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 1529 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 734003200 4321 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17987 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(StatFields {
                utime: 250,
                stime: 75,
                start_ticks: 123456,
                vsize_bytes: 734003200,
                rss_pages: 4321,
            })
        );
    }

    #[test]
    fn a_truncated_stat_line_is_refused() {
        assert_eq!(parse_stat("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn reads_boot_time() {
        let text = "cpu  1 2 3\nintr 5\nctxt 9\nbtime 1764650000\nprocesses 7\n";
        assert_eq!(boot_time_seconds(text), Some(1764650000));
        assert_eq!(boot_time_seconds("cpu 1\n"), None);
    }

    #[test]
    fn this_process_reports_plausible_figures() {
        let stats = process_stats().expect("process stats");
        assert!(stats.resident_memory_bytes > 1 << 20, "{stats:?}");
        assert!(stats.virtual_memory_bytes >= stats.resident_memory_bytes);
        assert!(
            stats.open_fds >= 3 && stats.open_fds <= stats.max_fds,
            "{stats:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        // Started in the last hour (tests run soon after they start).
        assert!(
            stats.start_time_seconds <= now + 1.0 && stats.start_time_seconds > now - 3600.0,
            "{stats:?}"
        );
    }
}
