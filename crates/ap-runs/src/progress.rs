//! The progress display of `ap reproduce`: one overall bar (runs done / total, ETA) and one
//! line per run in flight (round, epoch, density, accuracy), redrawn in place on a
//! terminal. When its output is not a terminal it stays quiet except for one line per
//! finished run, so logs and CI output stay readable. It writes to the writer it is given
//! (the `ap` program gives it stderr).

use std::io::Write;
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
pub struct Board<'w> {
    total: usize,
    done: usize,
    failed: usize,
    slots: Vec<Slot>,
    started: Instant,
    /// Estimated seconds of the runs to do, and of those finished so far.
    work_total: f64,
    work_done: f64,
    /// Redraw in place (the output is a terminal).
    tty: bool,
    drawn_lines: usize,
    out: Out<'w>,
}

/// Where a board writes (a writer has no `Debug` of its own).
struct Out<'w>(&'w mut (dyn Write + Send));

impl std::fmt::Debug for Out<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<writer>")
    }
}

impl<'w> Board<'w> {
    /// A board for `total` runs with `work_total` estimated seconds of work, drawn by
    /// `slots` workers on `out`; `tty`: `out` is a terminal, redraw the live lines there.
    pub fn new(
        total: usize,
        work_total: f64,
        slots: usize,
        out: &'w mut (dyn Write + Send),
        tty: bool,
    ) -> Board<'w> {
        Board {
            total,
            done: 0,
            failed: 0,
            slots: vec![Slot::default(); slots],
            started: Instant::now(),
            work_total,
            work_done: 0.0,
            tty,
            drawn_lines: 0,
            out: Out(out),
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
        let _ = writeln!(
            self.out.0,
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
        for _ in 0..self.drawn_lines {
            let _ = write!(self.out.0, "\x1b[1A\x1b[2K");
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
        for l in &lines {
            let _ = writeln!(self.out.0, "{l}");
        }
        self.drawn_lines = lines.len();
    }

    /// Removes the live lines (call before printing the final report).
    pub fn close(&mut self) {
        if self.tty {
            self.clear();
        }
    }

    /// The writer back, for lines after the display (close it first).
    pub fn into_writer(self) -> &'w mut (dyn Write + Send) {
        self.out.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a board for `total` runs (`work` seconds of work, a slot per run) writes while
    /// `drive` uses it and once it is closed.
    fn drawn(total: usize, work: f64, tty: bool, drive: impl FnOnce(&mut Board)) -> String {
        let mut out: Vec<u8> = vec![];
        let mut b = Board::new(total, work, total, &mut out, tty);
        drive(&mut b);
        b.close();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn off_a_terminal_only_finished_runs_are_written() {
        let text = drawn(2, 10.0, false, |b| {
            b.start(0, "a");
            let round = Progress::Round {
                round: 1,
                density: 0.8,
                accuracy: 0.9,
            };
            b.update(0, &round);
            b.start(1, "b");
            b.finish(0, true, 5.0, "");
            assert!(b.eta().is_some());
            b.finish(1, false, 5.0, "boom");
        });
        assert_eq!(text, "[1/2] done a\n[2/2] FAILED b: boom\n");
    }

    #[test]
    fn on_a_terminal_live_lines_are_drawn_and_cleared() {
        let text = drawn(1, 1.0, true, |b| {
            b.start(0, "run-a");
            // Each epoch redraws the run's line in place.
            for epoch in 1..=3 {
                b.update(
                    0,
                    &Progress::Epoch {
                        round: 2,
                        epoch,
                        loss: 0.5,
                    },
                );
            }
        });
        // The next epoch clears both live lines (bar and run) and draws them again.
        let redrawn = "  run-a: round 2 epoch 2 loss 0.500\n\x1b[1A\x1b[2K\x1b[1A\x1b[2K[";
        for part in ["0/1 runs", "  run-a: round 2 epoch 3 loss 0.500\n", redrawn] {
            assert!(text.contains(part), "{part:?} missing from {text:?}");
        }
        // Two live lines (bar and run) cleared at the end.
        assert!(text.ends_with("\x1b[1A\x1b[2K\x1b[1A\x1b[2K"), "{text:?}");
    }
}
