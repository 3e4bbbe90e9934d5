//! How results look: tables for people, JSON or YAML (`-o json`, `-o
//! yaml`) for programs. Data goes to stdout; diagnostics go to stderr.
//!
//! Tables fit the terminal: the widest columns are narrowed first and
//! their cells cut with `…`; `-o wide` prints every cell in full, as does
//! any table whose output is not a terminal (so `grep` sees whole cells).
//! States are coloured only on a terminal, never with `NO_COLOR` set or
//! `TERM=dumb` ([`colour_wanted`]).

use std::io::IsTerminal;

use chrono::{DateTime, TimeZone, Utc};
use comfy_table::{Color, ContentArrangement, presets};
use serde::Serialize;
use ultron8_proto::convert::status_from_wire;
use ultron8_proto::v1;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// `-o`: how a command prints what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns that fit the terminal, long cells cut with `…`, ids shortened
    Table,
    /// Every column in full, ids whole
    Wide,
    /// JSON, for programs
    Json,
    /// YAML, the same data as JSON
    Yaml,
}

impl Format {
    /// JSON or YAML: data for programs rather than text for people.
    pub fn is_data(self) -> bool {
        matches!(self, Format::Json | Format::Yaml)
    }
}

/// Where output goes and how it may look there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub format: Format,
    /// ANSI colours for states.
    pub colour: bool,
    /// The terminal's width in columns; `None` when stdout is no terminal.
    pub width: Option<usize>,
}

impl Output {
    /// For `format`, on this process's stdout and environment.
    pub fn detect(format: Format) -> Output {
        let terminal = std::io::stdout().is_terminal();
        let var = |name: &str| std::env::var(name).ok();
        Output {
            format,
            colour: colour_wanted(terminal, var("NO_COLOR").as_deref(), var("TERM").as_deref()),
            width: terminal
                .then(|| {
                    var("COLUMNS")
                        .and_then(|c| c.trim().parse::<usize>().ok())
                        .filter(|c| *c > 0)
                        .or_else(|| {
                            terminal_size::terminal_size().map(|(width, _)| usize::from(width.0))
                        })
                })
                .flatten(),
        }
    }

    /// Plain text: no colour, no width limit (tests, pipes).
    pub fn plain(format: Format) -> Output {
        Output {
            format,
            colour: false,
            width: None,
        }
    }

    pub fn is_data(&self) -> bool {
        self.format.is_data()
    }

    /// Prints `value` as JSON or YAML, as `-o` asked.
    pub fn data<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        println!("{}", data_text(self.format, value)?);
        Ok(())
    }

    pub fn table(&self, table: &Table) {
        print!("{}", self.render(table));
    }

    pub fn render(&self, table: &Table) -> String {
        let width = match self.format {
            Format::Table => self.width,
            _ => None,
        };
        render(table, self.format == Format::Wide, self.colour, width)
    }

    /// A state word, coloured when colour is on.
    pub fn state(&self, state: &str) -> String {
        match (self.colour, state_colour(state)) {
            (true, Some(colour)) => format!("\x1b[{}m{state}\x1b[0m", ansi_code(colour)),
            _ => state.to_string(),
        }
    }
}

/// Whether to colour: only on a terminal, never with `NO_COLOR` set to
/// anything but the empty string (no-color.org), nor on a `dumb` terminal.
pub fn colour_wanted(terminal: bool, no_color: Option<&str>, term: Option<&str>) -> bool {
    terminal && no_color.is_none_or(str::is_empty) && term != Some("dumb")
}

/// The colour of a state word: green for what went well, red for what did
/// not, yellow for what is under way; none for the rest.
pub fn state_colour(state: &str) -> Option<Color> {
    match state {
        "succeeded" | "online" | "processed" | "enabled" | "yes" | "ok" | "healthy" => {
            Some(Color::Green)
        }
        "failed" | "timed_out" | "lost" | "rejected" | "expired" | "offline" | "error"
        | "failing" | "flapping" => Some(Color::Red),
        "running" | "dispatched" | "requested" | "pending" => Some(Color::Yellow),
        "canceled" | "disabled" | "no" => Some(Color::Magenta),
        _ => None,
    }
}

/// The SGR code of the colours [`state_colour`] uses.
fn ansi_code(colour: Color) -> u8 {
    match colour {
        Color::Green => 32,
        Color::Red => 31,
        Color::Yellow => 33,
        Color::Magenta => 35,
        _ => 39,
    }
}

/// `value` as `format` prints it (JSON for anything but YAML).
pub fn data_text<T: Serialize>(format: Format, value: &T) -> anyhow::Result<String> {
    Ok(match format {
        Format::Yaml => serde_norway::to_string(value)?.trim_end().to_string(),
        _ => serde_json::to_string_pretty(value)?,
    })
}

/// One cell of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// What a table shows.
    text: String,
    /// What `-o wide` shows instead (a whole id), if it differs.
    wide: Option<String>,
    colour: Option<Color>,
    /// Never cut: an id or a state cut short is no use.
    keep: bool,
}

impl Cell {
    pub fn text(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            wide: None,
            colour: None,
            keep: false,
        }
    }

    /// A state word, coloured by [`state_colour`]; never cut.
    pub fn state(state: impl Into<String>) -> Cell {
        let text = state.into();
        Cell {
            colour: state_colour(&text),
            text,
            wide: None,
            keep: true,
        }
    }

    /// An id: `short` in a table, `full` with `-o wide`; never cut.
    pub fn id(full: impl Into<String>, short: impl Into<String>) -> Cell {
        Cell {
            keep: true,
            ..Cell::abbreviated(full, short)
        }
    }

    /// `short` in a table (and cut further to fit), `full` with `-o wide`.
    pub fn abbreviated(full: impl Into<String>, short: impl Into<String>) -> Cell {
        Cell {
            text: short.into(),
            wide: Some(full.into()),
            colour: None,
            keep: false,
        }
    }

    fn shown(&self, wide: bool) -> &str {
        match (&self.wide, wide) {
            (Some(full), true) => full,
            _ => &self.text,
        }
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Cell {
        Cell::text(text)
    }
}

/// Rows under a header, laid out by [`Output::table`].
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    /// Columns shown with `-o wide` only, by index.
    wide_only: Vec<usize>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            wide_only: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Shows the columns with these headers with `-o wide` only, as
    /// kubectl does: a table keeps to what fits a terminal.
    pub fn wide_only(mut self, headers: &[&str]) -> Table {
        self.wide_only = self
            .header
            .iter()
            .enumerate()
            .filter(|(_, h)| headers.contains(&h.as_str()))
            .map(|(i, _)| i)
            .collect();
        self
    }

    pub fn row(&mut self, cells: Vec<Cell>) -> &mut Table {
        self.rows.push(cells);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Spaces comfy-table puts around each cell (its padding).
const CELL_PADDING: usize = 2;

/// No column is narrowed below this (or its header, or its widest cell if
/// narrower).
const MIN_COLUMN: usize = 6;

/// The table as text: cells cut to fit `width` when given, every column
/// and cell in full with `wide`, states coloured with `colour`.
pub fn render(table: &Table, wide: bool, colour: bool, width: Option<usize>) -> String {
    fn shown(row: &[Cell], i: usize, wide: bool) -> &str {
        row.get(i).map(|c| c.shown(wide)).unwrap_or("")
    }
    let one_line = |text: &str| text.replace(['\n', '\r', '\t'], " ");
    let columns: Vec<usize> = (0..table.header.len())
        .filter(|i| wide || !table.wide_only.contains(i))
        .collect();
    let natural: Vec<usize> = columns
        .iter()
        .map(|&i| {
            table
                .rows
                .iter()
                .map(|row| one_line(shown(row, i, wide)).width())
                .chain([table.header[i].width()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Wide tables are never cut.
    let widths = match width.filter(|_| !wide) {
        Some(width) => {
            let floors: Vec<usize> = columns
                .iter()
                .zip(&natural)
                .map(|(&i, &natural)| {
                    let keep = table
                        .rows
                        .iter()
                        .any(|row| row.get(i).is_some_and(|c| c.keep));
                    if keep {
                        natural
                    } else {
                        natural.min(MIN_COLUMN.max(table.header[i].width()))
                    }
                })
                .collect();
            fit_widths(
                &natural,
                &floors,
                width.saturating_sub(CELL_PADDING * columns.len()),
            )
        }
        None => natural,
    };
    let mut out = comfy_table::Table::new();
    out.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(
            columns
                .iter()
                .zip(&widths)
                .map(|(&i, w)| truncate(&table.header[i], *w))
                .collect::<Vec<_>>(),
        );
    if colour {
        out.enforce_styling().style_text_only();
    } else {
        out.force_no_tty();
    }
    for row in &table.rows {
        out.add_row(columns.iter().zip(&widths).map(|(&i, &w)| {
            let mut cell = comfy_table::Cell::new(truncate(&one_line(shown(row, i, wide)), w));
            if let Some(c) = row.get(i).and_then(|c| c.colour) {
                cell = cell.fg(c);
            }
            cell
        }));
    }
    format!("{out}\n")
}

/// Column widths that fit in `available`: the widest columns are narrowed
/// first, to a common cap, never below their floor; what is left of
/// `available` goes back to the narrowed ones. When even the floors do not
/// fit, the floors.
pub fn fit_widths(natural: &[usize], floors: &[usize], available: usize) -> Vec<usize> {
    let total = |cap: usize| -> usize {
        natural
            .iter()
            .zip(floors)
            .map(|(n, f)| (*n).min(cap.max(*f)))
            .sum()
    };
    if natural.iter().sum::<usize>() <= available {
        return natural.to_vec();
    }
    // The largest cap that fits; total() grows with the cap.
    let (mut low, mut high) = (0, natural.iter().copied().max().unwrap_or(0));
    while low < high {
        let mid = (low + high).div_ceil(2);
        if total(mid) <= available {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    let mut widths: Vec<usize> = natural
        .iter()
        .zip(floors)
        .map(|(n, f)| (*n).min(low.max(*f)))
        .collect();
    let mut left = available.saturating_sub(widths.iter().sum());
    for (width, natural) in widths.iter_mut().zip(natural) {
        if left == 0 {
            break;
        }
        if *width < *natural {
            *width += 1;
            left -= 1;
        }
    }
    widths
}

/// `text` cut to `width` terminal columns, ending in `…` when cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        cut.push(c);
        used += w;
    }
    cut.push('…');
    cut
}

pub fn time(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0)
        .then(|| Utc.timestamp_millis_opt(ms).single())
        .flatten()
}

pub fn ago(ms: i64) -> String {
    match time(ms) {
        Some(at) => {
            let elapsed = (Utc::now() - at).to_std().unwrap_or_default();
            format!(
                "{} ago",
                humantime::format_duration(std::time::Duration::from_secs(elapsed.as_secs()))
            )
        }
        None => "never".into(),
    }
}

pub fn status_name(status: i32) -> String {
    status_from_wire(status)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| format!("unknown({status})"))
}

/// How long a running execution has run: `12.30s so far`, or `not
/// started` before its drone picked it up.
pub fn running_for(started_at_ms: i64, now: DateTime<Utc>) -> String {
    match time(started_at_ms) {
        Some(started) => {
            let ms = (now - started).num_milliseconds().max(0) as u64;
            format!("{} so far", seconds(ms))
        }
        None => "not started".into(),
    }
}

pub fn seconds(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

#[derive(Serialize)]
pub struct DroneView {
    pub id: String,
    pub online: bool,
    pub hostname: String,
    pub os: String,
    pub os_version: String,
    pub kernel: String,
    pub arch: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub labels: std::collections::BTreeMap<String, String>,
    pub agent_version: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub enrolled_at: Option<DateTime<Utc>>,
    pub stats: Option<StatsView>,
}

#[derive(Serialize)]
pub struct StatsView {
    pub cpu_percent: f32,
    pub memory_percent: f32,
    pub disk_percent: f32,
    pub load: [f64; 3],
    pub uptime_seconds: u64,
}

impl From<&v1::Drone> for DroneView {
    fn from(d: &v1::Drone) -> Self {
        let facts = d.facts.clone().unwrap_or_default();
        DroneView {
            id: d.id.clone(),
            online: d.online,
            hostname: facts.hostname,
            os: facts.os,
            os_version: facts.os_version,
            kernel: facts.kernel,
            arch: facts.arch,
            cpus: facts.cpus,
            memory_bytes: facts.memory_bytes,
            labels: facts.labels.into_iter().collect(),
            agent_version: facts.agent_version,
            last_seen: time(d.last_seen_ms),
            enrolled_at: time(d.enrolled_at_ms),
            stats: d.stats.as_ref().map(|s| StatsView {
                cpu_percent: s.cpu_percent,
                memory_percent: s.memory_percent,
                disk_percent: s.disk_percent,
                load: [s.load1, s.load5, s.load15],
                uptime_seconds: s.uptime_seconds,
            }),
        }
    }
}

#[derive(Serialize)]
pub struct ExecutionView {
    pub id: String,
    pub job_id: String,
    pub drone: String,
    pub status: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&v1::Execution> for ExecutionView {
    fn from(e: &v1::Execution) -> Self {
        ExecutionView {
            id: e.id.clone(),
            job_id: e.job_id.clone(),
            drone: e.drone_id.clone(),
            status: status_name(e.status),
            exit_code: e.exit_code,
            duration_ms: e.duration_ms,
            stdout: String::from_utf8_lossy(&e.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&e.stderr).into_owned(),
            stdout_truncated: e.stdout_truncated,
            stderr_truncated: e.stderr_truncated,
            error: Some(e.error.clone()).filter(|s| !s.is_empty()),
            created_at: time(e.created_at_ms),
            dispatched_at: time(e.dispatched_at_ms),
            started_at: time(e.started_at_ms),
            finished_at: time(e.finished_at_ms),
            expires_at: time(e.expires_at_ms),
        }
    }
}

#[derive(Serialize)]
pub struct JobView {
    pub id: String,
    pub target: String,
    pub requester: String,
    pub command: String,
    pub created_at: Option<DateTime<Utc>>,
    pub executions: Vec<ExecutionView>,
    /// Drones the target named that were offline at submission: not run.
    pub offline_drones: Vec<String>,
}

impl From<&v1::Job> for JobView {
    fn from(j: &v1::Job) -> Self {
        JobView {
            id: j.id.clone(),
            target: j.target.clone(),
            requester: j.requester.clone(),
            command: j
                .command
                .clone()
                .and_then(|c| ultron8_proto::convert::command_from_wire(Some(c)).ok())
                .map(|c| c.program.display())
                .unwrap_or_default(),
            created_at: time(j.created_at_ms),
            executions: j.executions.iter().map(ExecutionView::from).collect(),
            offline_drones: j.offline_drones.clone(),
        }
    }
}

/// One host's result, as `job get` and `exec get` print it: a header
/// line, then the output indented.
pub fn print_execution_result(e: &v1::Execution, out: &Output) {
    let terminal = status_from_wire(e.status).is_ok_and(|s| s.is_terminal());
    if terminal {
        let exit = e
            .exit_code
            .map(|c| format!("exit {c}"))
            .unwrap_or_else(|| "no exit code".into());
        println!(
            "{}  {}  {}  {}",
            e.drone_id,
            out.state(&status_name(e.status)),
            exit,
            seconds(e.duration_ms)
        );
    } else {
        println!(
            "{}  {}  {}",
            e.drone_id,
            out.state(&status_name(e.status)),
            running_for(e.started_at_ms, Utc::now())
        );
    }
    for (bytes, truncated, label) in [
        (&e.stdout, e.stdout_truncated, "stdout"),
        (&e.stderr, e.stderr_truncated, "stderr"),
    ] {
        if bytes.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            if label == "stderr" {
                println!("  ! {line}");
            } else {
                println!("  | {line}");
            }
        }
        if truncated {
            println!("  ({label} truncated at the drone's output cap)");
        }
    }
    if !e.error.is_empty() {
        println!("  error: {}", e.error);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn long_cells_are_cut_with_an_ellipsis_to_the_column() {
        assert_eq!(truncate("uptime", 10), "uptime");
        assert_eq!(truncate("systemctl restart nginx", 10), "systemctl…");
        assert_eq!(truncate("abc", 1), "…");
        assert_eq!(truncate("abc", 0), "");
        // Wide characters count as two columns.
        assert_eq!(truncate("日本語のホスト", 7), "日本語…");
    }

    #[test]
    fn the_widest_columns_give_way_first_and_none_below_its_floor() {
        // Fits: as they are.
        assert_eq!(fit_widths(&[5, 10, 20], &[5, 10, 10], 40), [5, 10, 20]);
        // The widest narrows to a cap; the narrow ones keep their width.
        assert_eq!(fit_widths(&[5, 30, 60], &[5, 10, 10], 60), [5, 28, 27]);
        assert_eq!(fit_widths(&[8, 12, 80], &[8, 10, 10], 50), [8, 12, 30]);
        // Not even the floors fit: the floors, and the line overflows.
        assert_eq!(fit_widths(&[36, 40], &[10, 10], 5), [10, 10]);
    }

    fn jobs_table() -> Table {
        let mut table = Table::new(&["JOB", "STATUS", "COMMAND"]);
        table.row(vec![
            Cell::id("0193a1c2-1234-7abc-8def-000000000001", "0193a1c2-1"),
            Cell::state("failed"),
            Cell::text("/bin/sh -c 'for host in $(cat /etc/hosts); do ping -c1 $host; done'"),
        ]);
        table.row(vec![
            Cell::id("0193a1c2-5678-7abc-8def-000000000002", "0193a1c2-5"),
            Cell::state("succeeded"),
            Cell::text("uptime"),
        ]);
        table
    }

    #[test]
    fn a_table_fits_the_terminal_and_wide_shows_everything() {
        let table = jobs_table();
        let narrow = render(&table, false, false, Some(50));
        for line in narrow.lines() {
            assert!(line.width() <= 50, "{line:?} is {} wide", line.width());
        }
        assert!(narrow.contains("0193a1c2-1 "), "{narrow}");
        assert!(narrow.contains("/bin/sh -c"), "{narrow}");
        assert!(narrow.contains('…'), "{narrow}");
        assert!(!narrow.contains('\x1b'), "no colour asked: {narrow:?}");

        let wide = render(&table, true, false, Some(50));
        assert!(
            wide.contains("0193a1c2-1234-7abc-8def-000000000001"),
            "{wide}"
        );
        assert!(wide.contains("ping -c1 $host; done'"), "{wide}");
        assert!(!wide.contains('…'), "{wide}");
        // No terminal, no width: nothing is cut.
        assert!(!render(&table, false, false, None).contains('…'));
    }

    #[test]
    fn a_table_keeps_ids_and_states_whole_and_leaves_wide_columns_to_wide() {
        let mut table =
            Table::new(&["JOB", "STATUS", "REQUESTER", "COMMAND"]).wide_only(&["REQUESTER"]);
        table.row(vec![
            Cell::id("0193a1c2-1234-7abc-8def-000000000001", "0193a1c2-1234"),
            Cell::state("timed_out"),
            Cell::text("operator:someone-with-a-long-name"),
            Cell::text("sleep 600 && echo this will not fit in the terminal at all"),
        ]);
        let narrow = render(&table, false, false, Some(40));
        assert!(narrow.contains(" 0193a1c2-1234 "), "{narrow}");
        assert!(narrow.contains(" timed_out "), "{narrow}");
        assert!(!narrow.contains("REQUESTER"), "{narrow}");
        for line in narrow.lines() {
            assert!(line.width() <= 40, "{line:?}");
        }
        let wide = render(&table, true, false, Some(40));
        assert!(wide.contains("REQUESTER") && wide.contains("operator:someone-with-a-long-name"));
    }

    #[test]
    fn states_are_coloured_only_when_asked() {
        let table = jobs_table();
        let coloured = render(&table, false, true, Some(120));
        let failed = coloured.find("failed").expect("the state");
        assert!(
            coloured[..failed].ends_with('m') && coloured[..failed].contains('\x1b'),
            "a colour starts right before the state: {coloured:?}"
        );
        let out = Output {
            format: Format::Table,
            colour: true,
            width: None,
        };
        assert_eq!(out.state("succeeded"), "\x1b[32msucceeded\x1b[0m");
        assert_eq!(out.state("web-1"), "web-1");
        assert_eq!(Output::plain(Format::Table).state("failed"), "failed");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None, Some("xterm-256color")));
        assert!(!colour_wanted(false, None, Some("xterm-256color")), "piped");
        assert!(!colour_wanted(true, Some("1"), Some("xterm")), "NO_COLOR");
        assert!(
            colour_wanted(true, Some(""), Some("xterm")),
            "NO_COLOR empty"
        );
        assert!(!colour_wanted(true, None, Some("dumb")));
        assert!(colour_wanted(true, None, None));
    }

    #[test]
    fn states_have_colours_by_outcome() {
        assert_eq!(state_colour("succeeded"), Some(Color::Green));
        for bad in ["failed", "timed_out", "lost", "offline"] {
            assert_eq!(state_colour(bad), Some(Color::Red), "{bad}");
        }
        assert_eq!(state_colour("running"), Some(Color::Yellow));
        assert_eq!(state_colour("web-1"), None);
    }

    #[test]
    fn yaml_is_the_same_data_as_json() {
        let value = serde_json::json!({ "id": "0193", "ok": true, "n": 3, "none": null });
        let yaml = data_text(Format::Yaml, &value).expect("yaml");
        // A string that reads as a number in YAML is quoted.
        for line in ["id: '0193'", "n: 3", "none: null", "ok: true"] {
            assert!(yaml.lines().any(|l| l == line), "{line} in {yaml}");
        }
        assert!(
            data_text(Format::Json, &value)
                .expect("json")
                .starts_with('{')
        );
    }

    #[test]
    fn a_running_execution_shows_how_long_it_has_run() {
        let now = Utc
            .with_ymd_and_hms(2026, 12, 2, 12, 0, 0)
            .single()
            .expect("time");
        let started = (now - chrono::Duration::milliseconds(12_300)).timestamp_millis();
        assert_eq!(running_for(started, now), "12.30s so far");
        assert_eq!(running_for(0, now), "not started");
    }
}
