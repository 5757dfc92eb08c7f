//! Rendering: aligned tables, progress bars on a terminal, JSON lines otherwise.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use drp_core::progress::{Event, Progress, Reporter};

/// How the command was asked to speak.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    /// The progress channel for this output: a bar on a terminal, JSON lines
    /// on stderr when not, nothing with `--quiet`.
    pub fn progress(&self) -> Reporter {
        if self.quiet {
            drp_core::progress::silent()
        } else if std::io::stderr().is_terminal() && !self.json {
            Arc::new(Bar::default())
        } else {
            Arc::new(JsonLines::default())
        }
    }

    pub fn print_json(&self, value: &serde_json::Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON serialises")
        );
    }
}

#[derive(Default)]
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bar {
    fn event(&self, event: Event) {
        let mut slot = self.bar.lock().expect("progress lock");
        match event {
            Event::Started { task, total } => {
                let bar = match total {
                    Some(n) => ProgressBar::new(n).with_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                        )
                        .expect("template")
                        .progress_chars("=> "),
                    ),
                    None => ProgressBar::new_spinner().with_style(
                        ProgressStyle::with_template(
                            "{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}",
                        )
                        .expect("template"),
                    ),
                };
                bar.set_message(task);
                bar.enable_steady_tick(Duration::from_millis(200));
                *slot = Some(bar);
            }
            Event::Advanced { bytes } => {
                if let Some(b) = slot.as_ref() {
                    b.inc(bytes);
                }
            }
            Event::Finished => {
                if let Some(b) = slot.take() {
                    b.finish_and_clear();
                }
            }
        }
    }
}

/// Progress as JSON lines on stderr, at most one a second per task.
#[derive(Default)]
struct JsonLines {
    state: Mutex<JsonState>,
}

#[derive(Default)]
struct JsonState {
    task: String,
    total: Option<u64>,
    bytes: u64,
    started: Option<Instant>,
    last: Option<Instant>,
}

impl JsonLines {
    fn emit(s: &JsonState, status: &str) {
        let secs = s.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        let line = serde_json::json!({
            "progress": s.task, "status": status, "bytes": s.bytes, "total": s.total,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "bytes_per_second": if secs > 0.0 { (s.bytes as f64 / secs) as u64 } else { 0 },
        });
        eprintln!("{line}");
    }
}

impl Progress for JsonLines {
    fn event(&self, event: Event) {
        let mut s = self.state.lock().expect("progress lock");
        match event {
            Event::Started { task, total } => {
                *s = JsonState {
                    task,
                    total,
                    started: Some(Instant::now()),
                    last: Some(Instant::now()),
                    ..Default::default()
                };
                JsonLines::emit(&s, "started");
            }
            Event::Advanced { bytes } => {
                s.bytes += bytes;
                if s.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    s.last = Some(Instant::now());
                    JsonLines::emit(&s, "running");
                }
            }
            Event::Finished => JsonLines::emit(&s, "finished"),
        }
    }
}

/// A plain aligned table.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut out = line(&self.header);
        for r in &self.rows {
            out.push('\n');
            out.push_str(&line(r));
        }
        out
    }
}
