//! `ap sweep` end to end on a tiny finished LeNet-300-100 / MNIST run (IMP, one round of
//! 20%: density 0.8): its files, the exact kept counts, the point at the run's own
//! sparsity reproducing the run's recorded accuracy, knees that are points of the list,
//! and clear errors for a directory that is not a run, an unfinished run and a bad list;
//! the N:M series: kept counts equal to a host reference of keep_top(|w|) ∧ mask, the
//! layers left dense, its reference point, and errors for bad or unfitting patterns.

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
        "--patterns",
        "7:8,2:4,1:8",
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
    assert!(
        svg.contains("N:M tolerance knee") && svg.contains("N:M curvature knee"),
        "{svg}"
    );
    assert!(
        stdout.contains("| pattern |") && stdout.contains("| 2:4 | 50% |"),
        "{stdout}"
    );

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

    check_nm_series(&json, &run, tmp.path(), recorded);

    // Errors: bad patterns, a pattern that fits no layer, a bad list, a directory that is
    // not a run, an unfinished run.
    let o = ap(&["sweep", run.to_str().unwrap(), "--patterns", "2:4,4:2"]);
    assert_clean_error(
        &o,
        &["--patterns 2:4,4:2", "\"4:2\"", "N:M", "--patterns none"],
    );
    let o = ap(&["sweep", run.to_str().unwrap(), "--patterns", "2:4,3:4"]);
    assert_clean_error(&o, &["--patterns 2:4,3:4", "less sparse"]);
    // 784, 300 and 100 are not multiples of 9.
    let o = ap(&["sweep", run.to_str().unwrap(), "--patterns", "1:9"]);
    assert_clean_error(&o, &["1:9 fits no prunable layer of lenet300-100", "M = 9"]);
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

/// The N:M series of `json` (patterns 7:8, 2:4, 1:8 with 0 among the sparsities): its
/// reference, kept counts equal to the host reference, dense layers and knees; then the
/// reference evaluated alone without 0 in the list, and `--patterns none`.
fn check_nm_series(json: &serde_json::Value, run: &Path, tmp: &Path, recorded: f64) {
    // The N:M series: the reference (the sparsity-0 point), then one point per pattern
    // keeping what a host reference of keep_top(|w|) ∧ mask keeps.
    let points = json["points"].as_array().unwrap();
    let nm = &json["nm"];
    let nm_points = nm["points"].as_array().unwrap();
    assert_eq!(nm_points.len(), 4, "{nm}");
    assert_eq!(
        nm_points[0], points[0],
        "the reference is the sparsity-0 point"
    );
    assert!(points.iter().all(|p| p.get("pattern").is_none()));
    let layers = run_layers(run);
    for (p, (pattern, n, m)) in
        nm_points[1..]
            .iter()
            .zip([("7:8", 7, 8), ("2:4", 2, 4), ("1:8", 1, 8)])
    {
        assert_eq!(p["pattern"].as_str(), Some(pattern), "{p}");
        assert_eq!(
            p["sparsity"].as_f64(),
            Some(1.0 - n as f64 / m as f64),
            "{p}"
        );
        assert_eq!(
            p["kept"].as_i64(),
            Some(host_nm_kept(&layers, n, m)),
            "{pattern}"
        );
        let achieved = 1.0 - p["kept"].as_f64().unwrap() / 266_200.0;
        assert!((p["achieved_sparsity"].as_f64().unwrap() - achieved).abs() < 1e-12);
    }
    // M = 8 fits fc1 (784 per row) only; M = 4 fits every layer.
    assert_eq!(
        nm["dense_layers"],
        serde_json::json!([{"m": 8, "layers": ["fc2.weight", "fc3.weight"]}])
    );
    for knee in ["tolerance_knee", "curvature_knee"] {
        let i = nm[knee]["index"].as_u64().unwrap() as usize;
        assert_eq!(nm[knee]["sparsity"], nm_points[i]["sparsity"], "{knee}");
        assert_eq!(
            nm[knee].get("pattern"),
            nm_points[i].get("pattern"),
            "{knee}"
        );
    }

    // Without 0 in the list the reference is the run's network, evaluated alone; with
    // `--patterns none` there is no N:M series and no pattern anywhere.
    let out2 = tmp.join("out2");
    let o = ap(&[
        "sweep",
        run.to_str().unwrap(),
        "--sparsities",
        "50,90",
        "--patterns",
        "2:4",
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("sweep.json")).unwrap()).unwrap();
    let nm2 = json2["nm"]["points"].as_array().unwrap();
    assert_eq!(nm2[0]["accuracy"].as_f64(), Some(recorded));
    assert_eq!(nm2[0]["kept"].as_i64(), Some(212_960));
    assert_eq!(nm2[1], nm_points[2], "the same 2:4 point");
    let o = ap(&[
        "sweep",
        run.to_str().unwrap(),
        "--sparsities",
        "0,50",
        "--patterns",
        "none",
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out2.join("sweep.json")).unwrap();
    assert!(
        !text.contains("\"nm\"") && !text.contains("pattern"),
        "{text}"
    );
}

/// The run's prunable layers as the sweep sees them: (|w| of the final network, the
/// mask's live flags, row length), for fc1, fc2, fc3.
fn run_layers(run: &Path) -> Vec<(Vec<f64>, Vec<bool>, usize)> {
    let checkpoint = ap_runs::RunDir {
        path: run.to_path_buf(),
    }
    .final_checkpoint()
    .unwrap();
    let mask = tch::Tensor::read_safetensors(run.join("mask.safetensors")).unwrap();
    let find = |ts: &[(String, tch::Tensor)], key: &str| {
        let t = &ts.iter().find(|(k, _)| k == key).unwrap().1;
        let row = (t.numel() as i64 / t.size()[0]) as usize;
        (ap_tensor::to_f64_vec(&t.to_kind(tch::Kind::Double)), row)
    };
    ["fc1.weight", "fc2.weight", "fc3.weight"]
        .iter()
        .map(|name| {
            let (w, row) = find(&checkpoint.tensors, &format!("model/{name}"));
            let (live, _) = find(&mask, name);
            let live: Vec<bool> = live.iter().map(|&v| v != 0.0).collect();
            (w.iter().map(|v| v.abs()).collect(), live, row)
        })
        .collect()
}

/// Host reference of an N:M point's kept count: each row (every dimension but the first)
/// is cut into groups of M consecutive weights; in a group the N largest |w| (a pruned
/// weight counts as 0; of equal values the earlier goes) stay if the run kept them, so a
/// group keeps N where the run left at least N. A layer whose rows are not a multiple of
/// M keeps every weight the run kept.
fn host_nm_kept(layers: &[(Vec<f64>, Vec<bool>, usize)], n: usize, m: usize) -> i64 {
    let mut kept = 0;
    for (w, live, row) in layers {
        if row % m != 0 {
            kept += live.iter().filter(|&&l| l).count();
            continue;
        }
        for (g, (wg, lg)) in w.chunks(m).zip(live.chunks(m)).enumerate() {
            let score = |i: usize| if lg[i] { wg[i] } else { 0.0 };
            let mut order: Vec<usize> = (0..m).collect();
            order.sort_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
            let live_here = lg.iter().filter(|&&l| l).count();
            let k = order[m - n..].iter().filter(|&&i| lg[i]).count();
            assert_eq!(k, n.min(live_here), "group {g}");
            kept += k;
        }
    }
    kept as i64
}
