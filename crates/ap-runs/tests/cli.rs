//! The `ap` program end to end: real MNIST runs, reuse of finished runs, determinism, and
//! clear one-line errors for bad specs and bad data files.

mod common;
use common::{assert_clean_error, data_dir as real_data_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ap_data::idx::encode_idx;
use ap_testkit::fixtures::{grid_of, lenet_mnist_spec, write_toml};
use ap_testkit::TomlExt;

fn ap(args: &[&str], data_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ap"));
    cmd.args(args).args(["--device", "cpu", "--threads", "1"]);
    if let Some(d) = data_dir {
        cmd.arg("--data-dir").arg(d);
    }
    cmd.output().expect("the ap binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `ap run <spec> --runs-dir <runs>`, with `--data-dir <data>` if given.
fn ap_run(spec: &Path, runs: &Path, data: Option<&Path>) -> Output {
    ap(
        &[
            "run",
            spec.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
        ],
        data,
    )
}

/// `ap reproduce --grid <grid> --runs-dir <runs> --out <out> --jobs 1`.
fn reproduce_args<'a>(grid: &'a Path, runs: &'a Path, out: &'a Path) -> Vec<&'a str> {
    let mut args = common::reproduce_args(grid, runs, out);
    args.extend(["--jobs", "1"]);
    args
}

#[test]
fn run_writes_its_directory_and_a_second_run_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_toml(tmp.path(), "spec.toml", &lenet_mnist_spec());
    let runs = tmp.path().join("runs");
    let data = real_data_dir();
    let o = ap_run(&spec, &runs, Some(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    let dirs: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1);
    let run = &dirs[0];
    assert!(run
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("imp+ap-lenet300-100-mnist-s3-"));
    for f in [
        "spec.toml",
        "provenance.json",
        "rounds.jsonl",
        "metrics.csv",
        "mask.safetensors",
        "DONE",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    assert!(!run.join("LOCK").exists(), "lock released");
    let rounds = std::fs::read_to_string(run.join("rounds.jsonl")).unwrap();
    assert_eq!(rounds.lines().count(), 3);
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    // density column: 1.0, 0.8, 0.64 (exact counts of 266,200 prunable weights)
    let kept: Vec<i64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(kept, vec![266_200, 212_960, 170_368]);

    // Every file of the run directory, name and bytes: a rerun that trained again would
    // append to log.txt ("started by process", epochs, rounds) and rewrite the records,
    // checkpoints and provenance.json.
    let snapshot = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(run)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let files_before = snapshot();
    assert_eq!(
        String::from_utf8_lossy(&files_before.iter().find(|(n, _)| n == "log.txt").unwrap().1)
            .matches("started by process")
            .count(),
        1
    );
    let before = std::fs::metadata(run.join("rounds.jsonl"))
        .unwrap()
        .modified()
        .unwrap();
    let again = ap_run(&spec, &runs, Some(&data));
    assert!(again.status.success(), "{}", stderr(&again));
    // Reused, not retrained: the directory is exactly as it was, and the report printed
    // is the same.
    let files_after = snapshot();
    assert_eq!(
        files_after.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        files_before.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "files appeared or went"
    );
    for ((name, after), (_, before)) in files_after.iter().zip(&files_before) {
        assert!(
            after == before,
            "{name} changed: the finished run was run again"
        );
    }
    assert_eq!(again.stdout, o.stdout);
    assert_eq!(
        std::fs::metadata(run.join("rounds.jsonl"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    assert_eq!(
        std::fs::read_to_string(run.join("rounds.jsonl")).unwrap(),
        rounds
    );
}

#[test]
fn same_spec_gives_identical_metrics_on_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let short = lenet_mnist_spec()
        .with("prune.rounds", 1)
        .with("train.iterations", 150);
    let spec = write_toml(tmp.path(), "spec.toml", &short);
    let data = real_data_dir();
    let metrics = |runs: &str| {
        let runs = tmp.path().join(runs);
        let o = ap_run(&spec, &runs, Some(&data));
        assert!(o.status.success(), "{}", stderr(&o));
        let run = std::fs::read_dir(&runs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        // every column but the wall-clock seconds
        std::fs::read_to_string(run.join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(metrics("a"), metrics("b"));
}

#[test]
fn bad_specs_are_one_line_errors_naming_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let unknown = write_toml(
        tmp.path(),
        "unknown.toml",
        &lenet_mnist_spec().with("learning_rate", 0.1),
    );
    // The error names the file, line and column of the unknown field.
    let line = 1 + std::fs::read_to_string(&unknown)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("learning_rate"))
        .unwrap();
    let at = format!("unknown.toml:{line}:1");
    let bad = [
        (unknown, vec![at.as_str(), "learning_rate"]),
        (
            write_toml(
                tmp.path(),
                "rate.toml",
                &lenet_mnist_spec().with("prune.rate", 1.5),
            ),
            vec!["rate.toml", "prune.rate = 1.5"],
        ),
        (
            write_toml(
                tmp.path(),
                "ap.toml",
                &lenet_mnist_spec().with("ap.rate", 0.25),
            ),
            vec!["ap.rate = 0.25"],
        ),
        (
            write_toml(
                tmp.path(),
                "model.toml",
                &lenet_mnist_spec().with("model", "lenet7"),
            ),
            vec!["lenet7", "lenet300-100"],
        ),
    ];
    for (file, needles) in &bad {
        assert_clean_error(&ap_run(file, &runs, None), needles);
    }
    assert!(!runs.exists(), "nothing is written for an invalid spec");
}

/// A data directory with small MNIST-format files; `corrupt` edits one of them.
fn fake_mnist(dir: &Path, corrupt: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> PathBuf {
    let m = dir.join("mnist");
    std::fs::create_dir_all(&m).unwrap();
    for (prefix, n) in [("train", 6usize), ("t10k", 4)] {
        let images = encode_idx(&[n, 28, 28], &vec![7u8; n * 784]);
        let labels = encode_idx(&[n], &(0..n as u8).collect::<Vec<_>>());
        for (name, bytes) in [
            (format!("{prefix}-images-idx3-ubyte"), images),
            (format!("{prefix}-labels-idx1-ubyte"), labels),
        ] {
            std::fs::write(m.join(&name), corrupt(&name, bytes)).unwrap();
        }
    }
    dir.to_path_buf()
}

#[test]
fn bad_data_files_are_one_line_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_toml(tmp.path(), "spec.toml", &lenet_mnist_spec());
    let runs = tmp.path().join("runs");
    let run_on = |data: &Path| ap_run(&spec, &runs, Some(data));
    let truncated = fake_mnist(&tmp.path().join("truncated"), |n, mut b| {
        if n == "train-images-idx3-ubyte" {
            b.truncate(b.len() - 100);
        }
        b
    });
    assert_clean_error(&run_on(&truncated), &["train-images-idx3-ubyte"]);
    let magic = fake_mnist(&tmp.path().join("magic"), |n, mut b| {
        if n == "t10k-labels-idx1-ubyte" {
            b[0] = 0x1f;
            b[1] = 0x00;
        }
        b
    });
    assert_clean_error(&run_on(&magic), &["t10k-labels-idx1-ubyte"]);
    let mismatch = fake_mnist(&tmp.path().join("mismatch"), |n, b| {
        if n == "train-labels-idx1-ubyte" {
            encode_idx(&[5], &[0, 1, 2, 3, 4])
        } else {
            b
        }
    });
    assert_clean_error(&run_on(&mismatch), &["train-labels-idx1-ubyte", "6", "5"]);
    let missing = tmp.path().join("empty");
    std::fs::create_dir_all(&missing).unwrap();
    assert_clean_error(&run_on(&missing), &["cargo xtask setup"]);
}

#[test]
fn reproduce_lists_runs_and_keeps_old_results_when_the_grid_is_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = write_toml(
        tmp.path(),
        "grid.toml",
        &grid_of(
            "g",
            &[
                ("seed", vec![0, 1].into()),
                ("ap.enabled", vec![false, true].into()),
            ],
            lenet_mnist_spec(),
        ),
    );
    let (runs, out) = (tmp.path().join("runs"), tmp.path().join("out"));
    let mut dry_run = common::reproduce_args(&grid, &runs, &out);
    dry_run.push("--dry-run");
    let o = ap(&dry_run, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("pending")).count(),
        4,
        "{listing}"
    );

    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("report.md"), "earlier report").unwrap();
    let bad = write_toml(
        tmp.path(),
        "bad.toml",
        &grid_of(
            "g",
            &[("seed", vec![0].into()), ("prune.rate", vec![2.0].into())],
            lenet_mnist_spec(),
        ),
    );
    let o = ap(&common::reproduce_args(&bad, &runs, &out), None);
    assert_clean_error(&o, &["bad.toml", "prune.rate = 2"]);
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        "earlier report"
    );
}

#[test]
fn a_diverging_run_is_recorded_and_the_others_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let optimizers = vec![
        ap_testkit::fixtures::adam(1e-3),
        ap_testkit::fixtures::sgd(1e12, 0.0, 0.0, false),
    ];
    let base = lenet_mnist_spec()
        .with("prune.rounds", 1)
        .with("train.iterations", 100);
    let grid = write_toml(
        tmp.path(),
        "grid.toml",
        &grid_of("g", &[("train.optimizer", optimizers.into())], base),
    );
    let (runs, out) = (tmp.path().join("runs"), tmp.path().join("out"));
    let args = reproduce_args(&grid, &runs, &out);
    let o = ap(&args, Some(&real_data_dir()));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 of 2 runs failed"), "{}", stderr(&o));
    let dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let failed: Vec<&PathBuf> = dirs.iter().filter(|d| d.join("FAILED").exists()).collect();
    assert_eq!(failed.len(), 1);
    assert!(std::fs::read_to_string(failed[0].join("FAILED"))
        .unwrap()
        .contains("diverged at step"));
    assert_eq!(
        dirs.iter().filter(|d| d.join("DONE").exists()).count(),
        1,
        "the other run finished"
    );
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&summary)
            .unwrap()
            .len(),
        2,
        "the finished run's 2 rounds"
    );
    // a rerun skips the failed run instead of repeating it
    let again = ap(&args, Some(&real_data_dir()));
    assert!(
        stderr(&again).contains("skipping failed run"),
        "{}",
        stderr(&again)
    );
}

/// Every grid and spec shipped in the repository parses and validates.
#[test]
fn shipped_grids_and_specs_are_valid() {
    let _g = ap_testkit::torch_lock();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("grids")).unwrap() {
        let path = entry.unwrap().path();
        let grid: ap_runs::GridSpec = ap_runs::spec::read_toml(&path).unwrap();
        assert!(!grid.expand(&path.display().to_string()).unwrap().is_empty());
        checked += 1;
    }
    for entry in std::fs::read_dir(root.join("specs")).unwrap() {
        let path = entry.unwrap().path();
        let spec: ap_runs::RunSpec = ap_runs::spec::read_toml(&path).unwrap();
        spec.validate().unwrap();
        checked += 1;
    }
    assert!(checked >= 4);
}

/// Conv-2 on Fashion-MNIST with IMP, with and without AP, through the same specs and runner.
#[test]
fn conv2_on_fashion_mnist_with_and_without_ap() {
    let tmp = tempfile::tempdir().unwrap();
    let base = lenet_mnist_spec()
        .with("model", "conv2")
        .with("dataset", "fashion-mnist")
        .with("prune.rounds", 1)
        .with("train.iterations", 60);
    let grid = write_toml(
        tmp.path(),
        "grid.toml",
        &grid_of("g", &[("ap.enabled", vec![false, true].into())], base),
    );
    let (runs, out) = (tmp.path().join("runs"), tmp.path().join("out"));
    let args = reproduce_args(&grid, &runs, &out);
    let o = ap(&args, Some(&real_data_dir()));
    assert!(o.status.success(), "{}", stderr(&o));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("conv2 / fashion-mnist — imp vs imp+AP"),
        "{report}"
    );
    let summary: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary.len(), 4);
    assert!(summary
        .iter()
        .all(|r| r["density"].as_f64().unwrap() >= 0.8 - 1e-9));
}
