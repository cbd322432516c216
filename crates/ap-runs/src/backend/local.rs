//! The local backend: the runs of a grid on this machine, `jobs` worker processes at a
//! time, each an `ap run --progress-json` whose JSON progress lines feed one progress
//! display ([`Board`]). A run another process holds (a concurrent `ap reproduce`) is
//! waited for, not run twice; a run that process left unfinished is run here after.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{Plan, RunSettings};
use crate::estimate::human;
use crate::progress::Board;
use crate::runner::{Progress, MALLOC_TUNABLES};
use crate::spec::RunSpec;
use crate::store::{RunDir, RunError, RunState};

/// Exit code of `ap run` when another live process holds the run's lock
/// ([`RunError::Locked`]): the run is busy, not failed.
pub const EXIT_LOCKED: i32 = 3;

/// Runs the plan's runs to do with `jobs` worker processes at a time, drawing progress on
/// `log` (`live`: redrawn in place, `log` is a terminal); returns the failures as
/// `<run>: <error>`.
pub fn run(
    plan: &Plan<'_>,
    jobs: usize,
    settings: &RunSettings,
    log: &mut (dyn Write + Send),
    live: bool,
) -> Result<Vec<String>> {
    let todo = &plan.todo;
    if todo.is_empty() {
        return Ok(vec![]);
    }
    // Threads per run follow the requested --jobs, not how many runs are left, so a
    // rerun of one run uses the same thread count (and gives the same numbers on CPU).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    let threads = settings.threads.unwrap_or((cores / jobs as i32).max(1));
    let workers = jobs.min(todo.len());
    let started = Instant::now();
    let board = Mutex::new(Board::new(todo.len(), plan.work(), workers, log, live));
    let failures = Mutex::new(vec![]);
    let busy = Mutex::new(vec![]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for slot in 0..workers {
            let (board, failures, busy, next) = (&board, &failures, &busy, &next);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(s, w)) = todo.get(i) else { break };
                board.lock().unwrap().start(slot, &s.dir_name());
                let end = run_child(s, settings, threads, jobs, |p| {
                    board.lock().unwrap().update(slot, p)
                });
                let mut board = board.lock().unwrap();
                match end {
                    Ok(ChildEnd::Finished) => board.finish(slot, true, w, ""),
                    Ok(ChildEnd::Locked) => {
                        busy.lock().unwrap().push(s);
                        board.finish(
                            slot,
                            true,
                            w,
                            "being run by another process; waiting for it",
                        )
                    }
                    Err(e) => {
                        board.finish(slot, false, w, &format!("{e:#}"));
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {e:#}", s.dir_name()));
                    }
                }
            });
        }
    });
    let mut board = board.into_inner().unwrap();
    board.close();
    let log = board.into_writer();
    let mut failures = failures.into_inner().unwrap();
    for s in busy.into_inner().unwrap() {
        writeln!(
            log,
            "waiting for {} (another process is running it)",
            s.dir_name()
        )?;
        if let Err(e) = finish_held_run(s, settings, threads) {
            failures.push(format!("{}: {e:#}", s.dir_name()));
        }
    }
    writeln!(
        log,
        "ran {} runs in {}",
        todo.len(),
        human(started.elapsed().as_secs_f64())
    )?;
    Ok(failures)
}

/// A run another process held: waits until it lets go; if it did not finish the run (it
/// was killed), runs it here (alone: the other runs have ended).
fn finish_held_run(spec: &RunSpec, settings: &RunSettings, threads: i32) -> Result<()> {
    let dir = RunDir::of(&settings.runs_dir, spec);
    loop {
        match dir.lock() {
            Ok(lock) => {
                drop(lock);
                break;
            }
            Err(RunError::Locked { .. }) => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => return Err(e.into()),
        }
    }
    if dir.state() != RunState::Done {
        run_child(spec, settings, threads, 1, |_| {})?;
    }
    Ok(())
}

/// How a child `ap run` ended without failing.
enum ChildEnd {
    /// The run is done.
    Finished,
    /// Another process holds the run ([`EXIT_LOCKED`]).
    Locked,
}

/// Runs one spec in a child `ap run` process with `threads` libtorch threads, passing its
/// progress events to `on_progress`. Its stderr (warnings, errors) passes through.
fn run_child(
    spec: &RunSpec,
    settings: &RunSettings,
    threads: i32,
    packed: usize,
    mut on_progress: impl FnMut(&Progress),
) -> Result<ChildEnd> {
    let dir = RunDir::of(&settings.runs_dir, spec);
    dir.init(spec)?;
    let mut cmd = Command::new(&settings.ap_exe);
    cmd.arg("run")
        .arg(dir.path.join("spec.toml"))
        .arg("--progress-json");
    cmd.arg("--runs-dir")
        .arg(&settings.runs_dir)
        .arg("--data-dir")
        .arg(&settings.data_dir);
    cmd.arg("--device")
        .arg(&settings.device)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--packed-runs")
        .arg(packed.to_string());
    if settings.verbose {
        cmd.arg("--verbose");
    }
    if settings.deterministic_cuda {
        cmd.arg("--deterministic-cuda");
    }
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        cmd.env("GLIBC_TUNABLES", MALLOC_TUNABLES);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting `ap run`")?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(p) = serde_json::from_str::<Progress>(&line) {
                on_progress(&p);
            }
        }
    }
    let status = child.wait().context("waiting for `ap run`")?;
    match status.code() {
        Some(0) => Ok(ChildEnd::Finished),
        Some(EXIT_LOCKED) => Ok(ChildEnd::Locked),
        _ => bail!(
            "`ap run` exited with {status} (see {})",
            dir.path.join("log.txt").display()
        ),
    }
}
