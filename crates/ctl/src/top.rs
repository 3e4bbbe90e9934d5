//! `ultronctl fleet top --service NAME`: a live full-screen view of one
//! service's instances (ratatui on crossterm), refreshed every interval
//! until `q`, Esc or Ctrl-C.
//!
//! The terminal is put back (raw mode off, the main screen back, the
//! cursor shown) however the view ends: by a key, an error, or a panic
//! (the [`TerminalGuard`]'s drop runs while unwinding).

use std::io::{IsTerminal, Stdout};
use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use futures::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use ultron8_proto::v1;

use crate::client::Client;
use crate::fleet::{all_instances, percent};

/// Samples a sparkline shows at most.
const SPARK_WIDTH: usize = 20;

/// Puts the terminal back when dropped.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> anyhow::Result<TerminalGuard> {
        crossterm::terminal::enable_raw_mode()?;
        let guard = TerminalGuard;
        crossterm::execute!(std::io::stdout(), EnterAlternateScreen)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = crossterm::execute!(
            std::io::stdout(),
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// What the view shows: the last answer, or why there is none.
struct View {
    service: String,
    interval: Duration,
    instances: Vec<v1::FleetInstance>,
    error: Option<String>,
    refreshed: Option<chrono::DateTime<chrono::Local>>,
    refreshes: u64,
}

pub async fn top(
    client: &mut Client,
    service: &str,
    interval: Duration,
    sort: &str,
) -> anyhow::Result<u8> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "fleet top draws on a terminal; for data use `ultronctl fleet summary --service {service} -o json`"
        );
    }
    let interval = interval.max(Duration::from_millis(200));
    let request = v1::FleetSummaryRequest {
        service: service.to_string(),
        sort: sort.to_string(),
        // Busiest first; names in order.
        descending: matches!(sort, "cpu" | "memory" | "status"),
        history: true,
        ..Default::default()
    };
    let guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    terminal.clear()?;
    let mut view = View {
        service: service.to_string(),
        interval,
        instances: Vec::new(),
        error: None,
        refreshed: None,
        refreshes: 0,
    };
    let mut events = EventStream::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            _ = ticker.tick() => {
                match all_instances(client, request.clone()).await {
                    Ok(instances) => {
                        view.instances = instances;
                        view.error = None;
                    }
                    Err(e) => view.error = Some(format!("{e:#}")),
                }
                view.refreshed = Some(chrono::Local::now());
                view.refreshes += 1;
                if let Err(e) = draw(&mut terminal, &view) {
                    break Err(e);
                }
            }
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) if quits(&key) => break Ok(0),
                Some(Ok(Event::Resize(..))) => {
                    if let Err(e) = draw(&mut terminal, &view) {
                        break Err(e);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(e.into()),
                None => break Ok(0),
            },
        }
    };
    // Stop reading the terminal before giving it back, so keys typed
    // for the shell afterwards reach the shell.
    drop(events);
    drop(terminal);
    drop(guard);
    outcome
}

/// `q`, Esc, or Ctrl-C (which raw mode delivers as a key, not a signal).
fn quits(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

fn draw(terminal: &mut Terminal<CrosstermBackend<Stdout>>, view: &View) -> anyhow::Result<()> {
    terminal.draw(|frame| {
        let [head, body] =
            Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(frame.area());
        let healthy = view
            .instances
            .iter()
            .filter(|i| i.status == "healthy")
            .count();
        let mut lines = vec![Line::from(format!(
            "fleet top: {}  {} instances, {healthy} healthy  every {}  {}  (q to quit)",
            view.service,
            view.instances.len(),
            humantime::format_duration(view.interval),
            view.refreshed
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default(),
        ))];
        lines.push(match &view.error {
            Some(error) => Line::styled(
                format!("cannot refresh: {error}"),
                Style::default().fg(Color::Red),
            ),
            None if view.instances.is_empty() && view.refreshes > 0 => {
                Line::from(format!("no instances of service {}", view.service))
            }
            None => Line::from(""),
        });
        frame.render_widget(Paragraph::new(lines), head);
        let rows = view.instances.iter().map(|i| {
            let style = match i.status.as_str() {
                "unhealthy" => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                "unknown" => Style::default().fg(Color::Yellow),
                _ => Style::default(),
            };
            let cpu: Vec<f64> = i.history.iter().map(|s| s.cpu).collect();
            let memory: Vec<f64> = i.history.iter().map(|s| s.memory).collect();
            Row::new(vec![
                Cell::from(i.name.clone()),
                Cell::from(percent(i.cpu)),
                Cell::from(sparkline(&cpu, SPARK_WIDTH)),
                Cell::from(percent(i.memory)),
                Cell::from(sparkline(&memory, SPARK_WIDTH)),
                Cell::from(if i.error.is_empty() {
                    i.status.clone()
                } else {
                    format!("{}: {}", i.status, i.error)
                }),
            ])
            .style(style)
        });
        let table = Table::new(
            rows,
            [
                Constraint::Length(22),
                Constraint::Length(7),
                Constraint::Length(SPARK_WIDTH as u16 + 1),
                Constraint::Length(7),
                Constraint::Length(SPARK_WIDTH as u16 + 1),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new([
                "NAME",
                "CPU",
                "CPU TREND",
                "MEMORY",
                "MEMORY TREND",
                "STATUS",
            ])
            .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::TOP));
        frame.render_widget(table, body);
    })?;
    Ok(())
}

/// The last `width` percentages as block characters, ▁ for 0 to █ for
/// 100, oldest on the left.
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let start = values.len().saturating_sub(width);
    values[start..]
        .iter()
        .map(|v| {
            let index = (v.clamp(0.0, 100.0) / 100.0 * 7.0).round() as usize;
            BARS[index.min(7)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_percentages_and_keep_the_newest() {
        assert_eq!(sparkline(&[0.0, 50.0, 100.0], 10), "▁▅█");
        assert_eq!(sparkline(&[0.0, 10.0, 20.0, 100.0], 2), "▂█");
        assert_eq!(sparkline(&[], 5), "");
        assert_eq!(sparkline(&[-5.0, 150.0], 5), "▁█");
    }

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(&key(KeyCode::Char('x'), KeyModifiers::NONE)));
    }
}
