//! The GPU experiment's script (`xtask/gpu-cnn.sh`, docs/gpu-cnn.md) on the CPU: its dry
//! run (`run --device cpu --tiny`) takes the path the GPU run takes — the concurrency
//! probe, `ap reproduce` of the tiny grid under `timeout`, the status and the copy of the
//! runs' small files — with this build's `ap` and real Fashion-MNIST (about 2 minutes on 2
//! cores).

mod common;
use common::data_dir;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

#[test]
fn gpu_cnn_script_dry_run_on_the_cpu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = data_dir();
    assert!(
        data.join("fashion-mnist").exists(),
        "Fashion-MNIST is not in {}: run `cargo xtask setup`",
        data.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let (store, out) = (tmp.path().join("store"), tmp.path().join("out"));
    let o = Command::new("bash")
        .current_dir(&root)
        .arg("xtask/gpu-cnn.sh")
        .args(["run", "--device", "cpu", "--tiny", "--jobs", "auto"])
        .arg("--ap")
        .arg(env!("CARGO_BIN_EXE_ap"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--store")
        .arg(&store)
        .arg("--out")
        .arg(&out)
        .env_remove("OUT")
        .output()
        .expect("bash runs");
    let log = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{log}");

    // The probe's table: a header, one row per N tried (1 and 2), exactly one chosen,
    // and the grid ran with that N.
    let tsv = std::fs::read_to_string(out.join("concurrency.tsv")).expect("concurrency.tsv");
    let rows: Vec<Vec<&str>> = tsv.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        rows[0],
        ["jobs", "iterations", "seconds", "iter_per_s", "chosen"]
    );
    assert_eq!(
        rows[1..].iter().map(|r| r[0]).collect::<Vec<_>>(),
        ["1", "2"],
        "{tsv}"
    );
    for r in &rows[1..] {
        assert!(r[3].parse::<f64>().unwrap() > 0.0, "{tsv}");
    }
    let chosen: Vec<&str> = rows[1..]
        .iter()
        .filter(|r| r[4] == "yes")
        .map(|r| r[0])
        .collect();
    assert_eq!(chosen.len(), 1, "{tsv}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("--jobs {} (time limit", chosen[0])),
        "{log}"
    );

    // The report has every run of grids/gpu-cnn-tiny.toml: IMP and GMP, each ± AP.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results/summary.json")).expect("summary.json"),
    )
    .unwrap();
    let runs: BTreeSet<(String, bool)> = summary
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["model"], "resnet20");
            assert_eq!(r["dataset"], "fashion-mnist");
            (
                r["run_key"].as_str().unwrap().to_owned(),
                r["ap"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(runs.iter().filter(|(_, ap)| *ap).count(), 2, "{runs:?}");
    let status = std::fs::read_to_string(out.join("status.txt")).unwrap();
    assert!(status.contains("4 runs: 4 done"), "{status}");

    // The runs' small files came back, the checkpoints stayed in the store.
    let dirs: Vec<_> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    for d in &dirs {
        assert!(d.join("metrics.csv").exists(), "{}", d.display());
        for f in std::fs::read_dir(d).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            assert!(!name.ends_with(".safetensors"), "{}/{name}", d.display());
        }
    }
}
