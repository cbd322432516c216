//! Named stopping points for tests of interruption: instead of killing a process after a
//! guessed delay (which lands elsewhere on a faster or busier machine), a test names the
//! point where the run dies, and the run kills itself exactly there.
//!
//! Two environment variables, read once per process; unset (always, outside tests) every
//! point costs one load of an already-initialised `OnceLock`:
//!
//! - `AP_TEST_ABORT_AT=<point>[@<run>]`: at the point, SIGKILL — no destructors, no
//!   flushing, LOCK and temporary files left as a kill leaves them. When an `ap` process
//!   leads this process's group (`ap reproduce` started in its own process group, as the
//!   tests start it) the whole group is killed: the reproduce and every run it started,
//!   as on a lost machine; otherwise (a Slurm task, a shell script) only this process.
//! - `AP_TEST_PAUSE_AT=<point>[@<run>]`: at the point, stop and wait — until the file
//!   named by `AP_TEST_RELEASE` exists (then go on), or until killed (a preemption).
//!
//! Both print one line to stderr first (`AP_TEST_ABORT_AT: killing … at <point> in
//! <run>` / `AP_TEST_PAUSE_AT: paused at <point> in <run> (pid <pid>)`), which a test
//! can wait for or check. `@<run>` restricts the point to runs whose directory name starts
//! with `<run>` (`@imp-` is the run without AP, `@imp+ap-` the one with it).
//!
//! Points, in the order a round reaches them (rounds are numbered as in rounds.jsonl:
//! round 0 is the dense training):
//!
//! - `after-epoch:<r>:<e>` — inside round `r`: its epoch `e` is trained (numbered as in
//!   log.txt), the round is not yet evaluated, pruned or saved. Nothing of the round is on
//!   disk yet, so this leaves the files a kill at any training step of the round leaves.
//! - `writing:<file>` — a file of the run directory written through the store's atomic
//!   write (`rounds.jsonl`, `metrics.csv`, `checkpoint-<r>.json`, `DONE`, …) is complete
//!   under its temporary name and not yet renamed: the temporary is left behind.
//! - `after-checkpoint:<r>` — round `r`'s records, mask and checkpoint are written.
//! - `after-done` — DONE is written; older checkpoints are not yet removed and the parent
//!   has not been told.
//!
//! A value that names no such point is an error at the first point reached, so a typo
//! cannot make a test pass without stopping anything.

use std::sync::OnceLock;

/// A place where a run can be stopped by `AP_TEST_ABORT_AT` / `AP_TEST_PAUSE_AT`.
#[derive(Debug, Clone, Copy)]
pub enum Point<'a> {
    /// Round `round`'s epoch `epoch` is trained; the round is not saved.
    AfterEpoch {
        /// Round.
        round: usize,
        /// Epoch, as in log.txt.
        epoch: u64,
    },
    /// The temporary of this file (name within the run directory) is written, not renamed.
    Writing(&'a str),
    /// Round `r`'s checkpoint is written.
    AfterCheckpoint(usize),
    /// DONE is written.
    AfterDone,
}

impl std::fmt::Display for Point<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::AfterEpoch { round, epoch } => write!(f, "after-epoch:{round}:{epoch}"),
            Point::Writing(file) => write!(f, "writing:{file}"),
            Point::AfterCheckpoint(r) => write!(f, "after-checkpoint:{r}"),
            Point::AfterDone => write!(f, "after-done"),
        }
    }
}

/// The variable that kills at a point.
pub const ABORT_VAR: &str = "AP_TEST_ABORT_AT";
/// The variable that pauses at a point.
pub const PAUSE_VAR: &str = "AP_TEST_PAUSE_AT";
/// The file whose existence ends a pause.
pub const RELEASE_VAR: &str = "AP_TEST_RELEASE";

/// A point named by one of the variables: `(point, run prefix)`.
type Target = Option<(String, Option<String>)>;

fn target(var: &str) -> Target {
    let value = std::env::var(var).ok()?;
    let (point, run) = match value.split_once('@') {
        Some((p, r)) => (p.to_string(), Some(r.to_string())),
        None => (value.clone(), None),
    };
    let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let valid = match point.split(':').collect::<Vec<_>>().as_slice() {
        ["after-epoch", r, e] => num(r) && num(e),
        ["writing", file] => !file.is_empty(),
        ["after-checkpoint", r] => num(r),
        ["after-done"] => true,
        _ => false,
    };
    if !valid {
        eprintln!(
            "error: {var}={value}: not a point (after-epoch:<r>:<e>, writing:<file>, after-checkpoint:<r>, after-done; optionally @<run>)"
        );
        std::process::exit(2);
    }
    Some((point, run))
}

fn abort_at() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| target(ABORT_VAR))
}

fn pause_at() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| target(PAUSE_VAR))
}

fn matches(t: &Target, run: &str, point: &Point<'_>) -> bool {
    t.as_ref().is_some_and(|(p, r)| {
        r.as_ref().is_none_or(|r| run.starts_with(r.as_str())) && *p == point.to_string()
    })
}

/// Run `run` (its directory name) reached `point`: kill or pause here when a test asked for
/// it; otherwise nothing.
pub fn reached(run: &str, point: Point<'_>) {
    let (abort, pause) = (abort_at(), pause_at());
    if abort.is_none() && pause.is_none() {
        return;
    }
    if matches(abort, run, &point) {
        kill_here(run, &point);
    }
    if matches(pause, run, &point) {
        eprintln!(
            "{PAUSE_VAR}: paused at {point} in {run} (pid {})",
            std::process::id()
        );
        let release = std::env::var_os(RELEASE_VAR).map(std::path::PathBuf::from);
        loop {
            if release.as_ref().is_some_and(|f| f.exists()) {
                eprintln!("{PAUSE_VAR}: released at {point} in {run}");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// SIGKILLs this process's group when an `ap` process leads it, else this process.
fn kill_here(run: &str, point: &Point<'_>) -> ! {
    let me = std::process::id();
    // /proc/self/stat: `pid (comm) state ppid pgrp ...`
    let pgrp = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok())
        });
    let exe = |pid: &str| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let leader_is_ap = pgrp
        .is_some_and(|g| g != me && exe(&g.to_string()).is_some_and(|e| Some(e) == exe("self")));
    let target = match pgrp {
        Some(g) if leader_is_ap => format!("-{g}"),
        _ => me.to_string(),
    };
    let whom = if target.starts_with('-') {
        "the process group"
    } else {
        "this process"
    };
    eprintln!("{ABORT_VAR}: killing {whom} (pid {me}) at {point} in {run}");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &target])
        .status();
    // Not reached once the signal is delivered; without `kill`, die without cleanup anyway.
    std::process::abort()
}
