//! `ap reproduce` under interruption, concurrency and damage, on the `smoke` profile with
//! real MNIST: the final summary.json must be the same bytes as an uninterrupted run's.

mod common;
use common::data_dir;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

fn any_file(store: &Path, name: &str) -> bool {
    files(store).iter().any(|p| p.ends_with(name))
}

/// Starts a reproduce in its own process group, waits until `ready` holds (or the
/// process ends), then SIGKILLs the whole group: the parent and its `ap run` children,
/// as a crash or a lost machine would.
fn start_and_kill(store: &Path, ready: impl Fn() -> bool) -> bool {
    let mut child: Child = reproduce_cmd(store, 2)
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            return false; // finished before the kill point
        }
        if ready() || t0.elapsed() > Duration::from_secs(300) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pgid = child.id() as i32;
    Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    child.wait().unwrap();
    true
}

fn uninterrupted() -> (tempfile::TempDir, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    reproduce(tmp.path());
    let s = summary(tmp.path());
    (tmp, s)
}

/// The acceptance test of resumability: kill a reproduce at several points (inside the
/// first phase, right after a checkpoint, in a later round, after a run finished), restart
/// it, and compare with an uninterrupted run: the same summary.json bit for bit, and no
/// temporary files or locks left.
#[test]
fn killed_and_resumed_reproduce_equals_an_uninterrupted_one() {
    let (_a, want) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path();
    let runs = store.join("runs");
    let kill_points: Vec<Box<dyn Fn() -> bool>> = vec![
        // while training round 0 (log.txt exists, no checkpoint yet)
        Box::new(|| any_file(&runs, "log.txt")),
        // just after a checkpoint was written
        Box::new(|| any_file(&runs, "checkpoint-1.json")),
        // in a later round
        Box::new(|| any_file(&runs, "checkpoint-2.json")),
        // after a run finished
        Box::new(|| any_file(&runs, "DONE")),
    ];
    let mut kills = 0;
    for ready in &kill_points {
        kills += usize::from(start_and_kill(store, ready));
    }
    assert!(kills >= 2, "the grid finished before it could be killed");
    let resumed = reproduce(store);
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(
        summary(store),
        want,
        "resumed summary differs; stderr: {err}"
    );
    let resumed_from_checkpoint = files(&runs)
        .into_iter()
        .filter(|p| p.ends_with("log.txt"))
        .any(|p| std::fs::read_to_string(p).unwrap().contains("resuming"));
    assert!(
        resumed_from_checkpoint,
        "no run continued from a checkpoint: the kills never hit a partial run"
    );
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
    assert!(start_and_kill(store2, || any_file(
        &runs2,
        "checkpoint-2.json"
    )));
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
