//! The progress display of `ap reproduce`: one overall bar (runs done / total, ETA) and one
//! line per run in flight (round, epoch, density, accuracy), redrawn in place on a
//! terminal. When stderr is not a terminal it stays quiet except for one line per
//! finished run, so logs and CI output stay readable.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use crate::estimate::human;
use crate::runner::Progress;

/// What one worker slot is doing.
#[derive(Debug, Clone, Default)]
struct Slot {
    name: String,
    status: String,
}

/// Shared progress state (wrap it in a `Mutex`).
#[derive(Debug)]
pub struct Board {
    total: usize,
    done: usize,
    failed: usize,
    slots: Vec<Slot>,
    started: Instant,
    /// Estimated seconds of the runs to do, and of those finished so far.
    work_total: f64,
    work_done: f64,
    tty: bool,
    drawn_lines: usize,
}

impl Board {
    /// A board for `total` runs with `work_total` estimated seconds of work, drawn by
    /// `slots` workers.
    pub fn new(total: usize, work_total: f64, slots: usize) -> Board {
        Board {
            total,
            done: 0,
            failed: 0,
            slots: vec![Slot::default(); slots],
            started: Instant::now(),
            work_total,
            work_done: 0.0,
            tty: std::io::stderr().is_terminal(),
            drawn_lines: 0,
        }
    }

    /// Worker `slot` started run `name`.
    pub fn start(&mut self, slot: usize, name: &str) {
        self.slots[slot] = Slot {
            name: name.to_string(),
            status: "starting".into(),
        };
        self.draw();
    }

    /// A progress event from the run in `slot`.
    pub fn update(&mut self, slot: usize, p: &Progress) {
        let s = &mut self.slots[slot];
        match p {
            Progress::Epoch { round, epoch, loss } => {
                // Keep the last round's accuracy visible while the next one trains.
                let acc = s.status.split(" | ").nth(1).unwrap_or("").to_string();
                s.status = format!("round {round} epoch {epoch} loss {loss:.3}");
                if !acc.is_empty() {
                    s.status = format!("{} | {acc}", s.status);
                }
            }
            Progress::Round {
                round,
                density,
                accuracy,
            } => {
                s.status = format!(
                    "round {round} done | density {:.2}% acc {:.2}%",
                    100.0 * density,
                    100.0 * accuracy
                );
            }
        }
        self.draw();
    }

    /// The run in `slot` ended; `work` is its estimated seconds.
    pub fn finish(&mut self, slot: usize, ok: bool, work: f64, message: &str) {
        self.done += 1;
        if !ok {
            self.failed += 1;
        }
        self.work_done += work;
        let name = std::mem::take(&mut self.slots[slot]).name;
        if self.tty {
            self.clear();
        }
        eprintln!(
            "[{}/{}] {} {name}{}",
            self.done,
            self.total,
            if ok { "done" } else { "FAILED" },
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        );
        self.draw();
    }

    /// Seconds left, scaling the estimate by how fast finished work actually went.
    pub fn eta(&self) -> Option<f64> {
        if self.work_done <= 0.0 {
            return None;
        }
        let rate = self.started.elapsed().as_secs_f64() / self.work_done;
        Some((self.work_total - self.work_done).max(0.0) * rate)
    }

    fn clear(&mut self) {
        let mut err = std::io::stderr().lock();
        for _ in 0..self.drawn_lines {
            let _ = write!(err, "\x1b[1A\x1b[2K");
        }
        self.drawn_lines = 0;
    }

    fn draw(&mut self) {
        if !self.tty {
            return;
        }
        self.clear();
        let width = 30;
        let filled = (width * self.done).checked_div(self.total).unwrap_or(width);
        let eta = self
            .eta()
            .map_or("ETA —".to_string(), |s| format!("ETA {}", human(s)));
        let mut lines = vec![format!(
            "[{}{}] {}/{} runs{} · {} elapsed · {eta}",
            "=".repeat(filled),
            " ".repeat(width - filled),
            self.done,
            self.total,
            if self.failed > 0 {
                format!(" ({} failed)", self.failed)
            } else {
                String::new()
            },
            human(self.started.elapsed().as_secs_f64())
        )];
        for s in self.slots.iter().filter(|s| !s.name.is_empty()) {
            lines.push(format!("  {}: {}", s.name, s.status));
        }
        let mut err = std::io::stderr().lock();
        for l in &lines {
            let _ = writeln!(err, "{l}");
        }
        self.drawn_lines = lines.len();
    }

    /// Removes the live lines (call before printing the final report).
    pub fn close(&mut self) {
        if self.tty {
            self.clear();
        }
    }
}
