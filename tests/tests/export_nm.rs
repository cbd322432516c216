//! `ap export --format semi-structured` end to end: a LeNet-300-100 / MNIST run pruned
//! one-shot to 2:4 (`pattern = "2:4"`) is exported, and an independent Python check
//! (`tests/reference/semi_structured_check.py`, torch from setup's venv) finds every layer
//! in the layout `torch.sparse.to_sparse_semi_structured` takes (2-D, contiguous, float16,
//! 32 × 64 multiples, at most 2 of every 4) and reproduces the run's recorded test accuracy
//! with the exported tensors. Plus the clear errors for a run without a pattern.

use std::process::Command;

use ap_runs::export::{export_semi_structured, json_path, ExportDtype};
use ap_runs::{execute, RunDir, RunOptions, RunSpec};

fn spec(pattern: Option<&str>) -> RunSpec {
    let pattern = pattern.map_or(String::new(), |p| format!("pattern = \"{p}\"\n"));
    let text = format!(
        r#"model = "lenet300-100"
dataset = "mnist"
seed = 3
{pattern}[train]
batch_size = 60
iterations = 400
optimizer = {{ kind = "adam", lr = 1.2e-3 }}
[prune]
method = "one_shot"
density = 0.5
fine_tune_iterations = 200
"#
    );
    RunSpec::parse(&text, "nm.toml").unwrap()
}

#[test]
fn a_two_of_four_run_exports_in_the_semi_structured_layout() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let options = RunOptions::quiet(ap_data::default_data_dir(), tch::Device::Cpu);
    let nm = spec(Some("2:4"));
    let records = execute(&nm, &runs, &options).unwrap();
    let recorded = records.last().unwrap().test.accuracy;
    let run_dir = RunDir::of(&runs, &nm).path;
    let out = tmp.path().join("nm.safetensors");
    let e = export_semi_structured(&run_dir, &out, ExportDtype::F16).unwrap();
    assert_eq!(
        e.layers.len(),
        3,
        "fc1, fc2 and fc3 all have rows of a multiple of 4"
    );
    assert!(e.dense_layers.is_empty());
    assert_eq!(e.others.len(), 3, "the three biases");
    // Half of every layer is kept: exactly 2 of every 4.
    for l in &e.layers {
        assert_eq!(l.kept * 2, l.rows_cols[0] * l.rows_cols[1], "{l:?}");
    }
    let data = mnist_test_split(tmp.path());
    let python = ap_e2e::reference_python();
    let script = ap_e2e::reference_script().with_file_name("semi_structured_check.py");
    let o = Command::new(python)
        .arg(&script)
        .arg(&out)
        .arg(json_path(&out))
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the Python check failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let accuracy = v["accuracy"].as_f64().unwrap();
    // float16 weights round to 3 significant digits: a handful of the 10,000 test
    // predictions may flip.
    assert!(
        (accuracy - recorded).abs() <= 0.002,
        "Python {accuracy} vs the run's {recorded}"
    );
    assert!(recorded > 0.9, "{recorded}");

    // A run without a pattern is an error that says what to do.
    let plain = spec(None);
    execute(&plain, &runs, &options).unwrap();
    let err = export_semi_structured(&RunDir::of(&runs, &plain).path, &out, ExportDtype::F16)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no N:M pattern") && err.contains("2:4"),
        "{err}"
    );
    let err = export_semi_structured(tmp.path(), &out, ExportDtype::F16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a run directory"), "{err}");
}

/// MNIST's test split as loaded (normalised), for the Python check: its path.
fn mnist_test_split(dir: &std::path::Path) -> std::path::PathBuf {
    let data = ap_e2e::mnist();
    let path = dir.join("test.safetensors");
    ap_tensor::save_safetensors(
        &path,
        &[
            ("images".into(), data.test.images.shallow_clone()),
            ("labels".into(), data.test.labels.shallow_clone()),
        ],
    )
    .unwrap();
    path
}
