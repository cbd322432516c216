//! `ap reproduce` under interruption, concurrency and damage, on the `smoke` profile with
//! real MNIST: the final summary.json must be the same bytes as an uninterrupted run's.
//!
//! Interruptions are not timed: the run kills itself at a named point
//! (`AP_TEST_ABORT_AT`, see `ap_runs::testpoint`), so every kill lands at the same place
//! on a fast or a loaded machine, and each test can say exactly what the resume must do.

mod common;
use ap_runs::testpoint::{ABORT_VAR, PAUSE_VAR};
use common::data_dir;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `ap reproduce --profile smoke` on `store` (runs in `store/runs`, report in `store/out`).
fn reproduce_cmd(store: &Path, jobs: usize) -> Command {
    reproduce_into(&store.join("runs"), &store.join("out"), jobs)
}

/// `ap reproduce --profile smoke` with this run store and report directory.
fn reproduce_into(runs: &Path, out: &Path, jobs: usize) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ap"));
    cmd.current_dir(root())
        // One libtorch thread per run everywhere, so results compare bit for bit.
        .args([
            "reproduce",
            "--profile",
            "smoke",
            "--device",
            "cpu",
            "--threads",
            "1",
        ])
        .arg("--jobs")
        .arg(jobs.to_string())
        .arg("--runs-dir")
        .arg(runs)
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(data_dir())
        .env_remove(ABORT_VAR)
        .env_remove(PAUSE_VAR)
        .stdout(Stdio::null());
    cmd
}

fn reproduce(store: &Path) -> Output {
    let o = reproduce_cmd(store, 2)
        .stderr(Stdio::piped())
        .output()
        .expect("ap runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn summary(store: &Path) -> Vec<u8> {
    std::fs::read(store.join("out/summary.json")).unwrap()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `ap reproduce --jobs 1` with `AP_TEST_ABORT_AT=<at>`, in its own process group: the
/// run that reaches the point SIGKILLs the group (the reproduce and its run, as a crash or
/// a lost machine would). One run at a time, so nothing else is caught half-way. Asserts
/// that it was killed there; returns its stderr.
fn reproduce_killed_at(store: &Path, at: &str) -> String {
    let o = reproduce_cmd(store, 1)
        .env(ABORT_VAR, at)
        .stderr(Stdio::piped())
        .process_group(0)
        .output()
        .expect("ap runs");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let (point, run) = at.split_once('@').unwrap();
    assert_eq!(
        o.status.signal(),
        Some(9),
        "not killed at {at} ({}); stderr:\n{err}",
        o.status
    );
    assert!(
        err.contains(&format!("{ABORT_VAR}: killing the process group (pid "))
            && err.contains(&format!(") at {point} in {run}")),
        "killed elsewhere than {at}; stderr:\n{err}"
    );
    err
}

/// The run directory whose name starts with `prefix` (`imp-`: without AP, `imp+ap-`: with).
fn run_dir(store: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = run_dirs(store)
        .into_iter()
        .filter(|d| d.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "{prefix}: {found:?}");
    found[0].clone()
}

/// Names of the files in `dir` (not recursive), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// The checkpoint records (`checkpoint-<r>.json`) in `dir`, as their rounds.
fn checkpoints(dir: &Path) -> Vec<usize> {
    names(dir)
        .iter()
        .filter_map(|n| {
            n.strip_prefix("checkpoint-")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect()
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default()
}

/// metrics.csv without its wall-clock column: what a resumed run must repeat exactly.
fn metrics(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

fn uninterrupted() -> (tempfile::TempDir, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    reproduce(tmp.path());
    let s = summary(tmp.path());
    (tmp, s)
}

/// The acceptance test of resumability. The `smoke` grid (two runs of rounds 0..=3) is
/// killed at five named points in turn — inside round 0, right after checkpoint 1, right
/// after checkpoint 2, right after DONE, and in the other run while checkpoint-1.json is
/// still a temporary file — and each restart must continue from exactly the checkpoint the
/// last kill left. The end result equals an uninterrupted run: the same summary.json bit
/// for bit, the same per-round metrics, and no temporary files or locks left.
#[test]
fn killed_and_resumed_reproduce_equals_an_uninterrupted_one() {
    let (clean, want) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path();
    let resumed_after = |dir: &Path, round: usize| {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        log(dir).contains(&format!(
            "resuming {name} after round {round} from its checkpoint"
        ))
    };

    // 1. Inside round 0 of the run without AP: nothing of the round is saved.
    reproduce_killed_at(store, "after-epoch:0:0@imp-");
    let a = run_dir(store, "imp-");
    assert!(checkpoints(&a).is_empty(), "{:?}", names(&a));
    assert!(!a.join("rounds.jsonl").exists(), "{:?}", names(&a));
    assert!(
        a.join("LOCK").exists(),
        "a kill leaves the lock: {:?}",
        names(&a)
    );
    assert_eq!(
        run_dirs(store),
        vec![a.clone()],
        "the run with AP has not started"
    );

    // 2. Right after checkpoint 1: the restart had nothing to resume from (round 0 again).
    reproduce_killed_at(store, "after-checkpoint:1@imp-");
    assert!(!log(&a).contains("resuming"), "{}", log(&a));
    assert_eq!(log(&a).matches("started by process").count(), 2);
    assert_eq!(checkpoints(&a), vec![0, 1]);
    assert_eq!(count_lines(&a.join("rounds.jsonl")), 2);

    // 3. Right after checkpoint 2: the restart continued after round 1, not from scratch.
    reproduce_killed_at(store, "after-checkpoint:2@imp-");
    assert!(resumed_after(&a, 1), "{}", log(&a));
    assert!(!resumed_after(&a, 0), "{}", log(&a));
    assert_eq!(checkpoints(&a), vec![1, 2]);
    assert_eq!(count_lines(&a.join("rounds.jsonl")), 3);

    // 4. Right after DONE, before the older checkpoint is dropped.
    reproduce_killed_at(store, "after-done@imp-");
    assert!(resumed_after(&a, 2), "{}", log(&a));
    assert!(a.join("DONE").exists());
    assert_eq!(checkpoints(&a), vec![2, 3]);

    // 5. The run with AP, while checkpoint-1.json is written but not renamed: the run
    // without AP is done and not touched; the other leaves a temporary file and a
    // checkpoint tensor file without its record.
    let a_log = log(&a);
    reproduce_killed_at(store, "writing:checkpoint-1.json@imp+ap-");
    assert_eq!(log(&a), a_log, "a finished run was run again");
    let b = run_dir(store, "imp+ap-");
    assert!(
        names(&b)
            .iter()
            .any(|n| n.starts_with("checkpoint-1.json.tmp-")),
        "{:?}",
        names(&b)
    );
    assert_eq!(checkpoints(&b), vec![0]);
    assert!(b.join("checkpoint-1.safetensors").exists());

    // 6. Finish: the run with AP continues after round 0 (checkpoint 1 has no record).
    let resumed = reproduce(store);
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed_after(&b, 0), "{}\n{err}", log(&b));
    assert_eq!(log(&a), a_log, "a finished run was run again");
    assert_eq!(
        summary(store),
        want,
        "resumed summary differs; stderr: {err}"
    );
    for prefix in ["imp-", "imp+ap-"] {
        assert_eq!(
            metrics(&run_dir(store, prefix)),
            metrics(&run_dir(clean.path(), prefix)),
            "{prefix}: the resumed run's rounds differ from the uninterrupted run's"
        );
    }
    let left: Vec<_> = files(store)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.contains(".tmp-") || n == "LOCK"
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Two reproduce processes on one store: both succeed, each run is trained exactly once
/// (one "started by process" line in its log), and both write the same summary.
#[test]
fn two_concurrent_reproduces_run_each_run_once() {
    let (_a, want) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path();
    let out2 = store.join("out2");
    let mut first = reproduce_cmd(store, 1)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Same run store, its own report directory.
    let second = reproduce_into(&store.join("runs"), &out2, 1)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o2 = second.wait_with_output().unwrap();
    let s1 = first.wait().unwrap();
    assert!(s1.success());
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    for log in files(&store.join("runs"))
        .into_iter()
        .filter(|p| p.ends_with("log.txt"))
    {
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            text.matches("started by process").count(),
            1,
            "{}:\n{text}",
            log.display()
        );
    }
    assert_eq!(summary(store), want);
    assert_eq!(std::fs::read(out2.join("summary.json")).unwrap(), want);
}

fn run_dirs(store: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(store.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Damage after the fact: a flipped byte in a finished run's rounds.jsonl, and a
/// truncated checkpoint of an interrupted run. Each is reported with its path, the run
/// continues from its last good stage, and the summary comes out unchanged.
#[test]
fn corrupt_files_are_reported_and_runs_continue_from_their_last_good_stage() {
    let (_a, want) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path();
    reproduce(store);
    // 1. A finished run's records: change one digit (still valid JSON).
    let dir = &run_dirs(store)[0];
    let epochs_logged = || {
        std::fs::read_to_string(dir.join("log.txt"))
            .unwrap()
            .matches(" epoch ")
            .count()
    };
    let epochs_before = epochs_logged();
    let rounds = dir.join("rounds.jsonl");
    let text = std::fs::read_to_string(&rounds).unwrap();
    let at = text.find("\"accuracy\":0.").unwrap() + "\"accuracy\":0.".len();
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&rounds, &bytes).unwrap();
    let o = reproduce(store);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&rounds.display().to_string()) && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(summary(store), want, "{err}");
    assert_eq!(
        epochs_logged(),
        epochs_before,
        "the records were repaired from the final checkpoint, nothing retrained"
    );

    // 2. An interrupted run whose newest checkpoint is damaged: the older one is used.
    let tmp2 = tempfile::tempdir().unwrap();
    let store2 = tmp2.path();
    let runs2 = store2.join("runs");
    reproduce_killed_at(store2, "after-checkpoint:2@imp-");
    let newest = files(&runs2)
        .into_iter()
        .find(|p| p.ends_with("checkpoint-2.safetensors"))
        .expect("checkpoint 2 exists");
    let len = std::fs::metadata(&newest).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    f.set_len(len / 2).unwrap();
    let o = reproduce(store2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&newest.display().to_string()), "{err}");
    assert_eq!(summary(store2), want, "{err}");
    assert!(files(&runs2).iter().any(|p| p
        .to_string_lossy()
        .ends_with("checkpoint-2.safetensors.corrupt")));
}
