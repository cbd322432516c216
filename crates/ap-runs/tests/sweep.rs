//! `ap sweep` end to end on a tiny finished LeNet-300-100 / MNIST run (IMP, one round of
//! 20%: density 0.8): its files, the exact kept counts, the point at the run's own
//! sparsity reproducing the run's recorded accuracy, knees that are points of the list,
//! and clear errors for a directory that is not a run, an unfinished run and a bad list.

mod common;
use common::{assert_clean_error, data_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ap_testkit::fixtures::{lenet_mnist_spec, write_toml};
use ap_testkit::TomlExt;

fn ap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ap"))
        .args(args)
        .args(["--device", "cpu", "--threads", "1", "--data-dir"])
        .arg(data_dir())
        .output()
        .expect("the ap binary runs")
}

/// A finished run under `root/runs`: its directory.
fn finished_run(root: &Path) -> PathBuf {
    let spec = lenet_mnist_spec()
        .with("prune.rounds", 1)
        .with("ap.enabled", false);
    let spec = write_toml(root, "spec.toml", &spec);
    let runs = root.join("runs");
    let o = ap(&[
        "run",
        spec.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn sweep_of_a_finished_run_writes_exact_points_knees_and_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = finished_run(tmp.path());
    let out = tmp.path().join("out");
    let o = ap(&[
        "sweep",
        run.to_str().unwrap(),
        "--sparsities",
        "0,10,20,50,90,99",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("| sparsity |") && stdout.contains("tolerance knee"),
        "{stdout}"
    );
    for f in ["sweep.json", "sweep.md", "sweep.svg"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(out.join("sweep.svg")).unwrap();
    assert!(svg.contains("tolerance knee") && svg.contains("curvature knee"));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    let points = json["points"].as_array().unwrap();
    let kept: Vec<i64> = points.iter().map(|p| p["kept"].as_i64().unwrap()).collect();
    // 266,200 prunable weights, the run keeps 80% = 212,960: sparsities below 20% keep
    // what the run keeps; above, round((1 − s) · 266,200).
    assert_eq!(
        kept,
        vec![212_960, 212_960, 212_960, 133_100, 26_620, 2_662]
    );
    assert_eq!(json["run_kept"].as_i64(), Some(212_960));
    // The points at and below the run's own sparsity are the run's final network.
    let rounds = std::fs::read_to_string(run.join("rounds.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(rounds.lines().last().unwrap()).unwrap();
    let recorded = last["test"]["accuracy"].as_f64().unwrap();
    assert_eq!(json["run_accuracy"].as_f64(), Some(recorded));
    for p in &points[..3] {
        assert_eq!(p["accuracy"].as_f64(), Some(recorded), "{p}");
    }
    for knee in ["tolerance_knee", "curvature_knee"] {
        let i = json[knee]["index"].as_u64().unwrap() as usize;
        assert_eq!(json[knee]["sparsity"], points[i]["sparsity"], "{knee}");
    }

    // Errors: a bad list, a directory that is not a run, an unfinished run.
    let o = ap(&["sweep", run.to_str().unwrap(), "--sparsities", "0,x"]);
    assert_clean_error(&o, &["--sparsities 0,x", "not a number"]);
    let o = ap(&["sweep", run.to_str().unwrap(), "--sparsities", "50,20"]);
    assert_clean_error(&o, &["--sparsities 50,20", "increase"]);
    let o = ap(&["sweep", out.to_str().unwrap()]);
    assert_clean_error(&o, &[out.to_str().unwrap(), "not a run directory"]);
    let unfinished = tmp.path().join("unfinished");
    std::fs::create_dir(&unfinished).unwrap();
    std::fs::copy(run.join("spec.toml"), unfinished.join("spec.toml")).unwrap();
    let o = ap(&["sweep", unfinished.to_str().unwrap()]);
    assert_clean_error(
        &o,
        &[unfinished.to_str().unwrap(), "not finished", "ap run"],
    );
}
