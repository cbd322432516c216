//! Smoke test of the benchmark programs' Rust side: `ap-bench --quick` runs every case once
//! with tiny sizes on real MNIST and must print, for each series the xtask's table pairs,
//! a JSON line with finite, non-negative samples. No timing is asserted (CI machines vary);
//! `cargo xtask bench --quick` additionally runs the PyTorch side.

use std::collections::BTreeSet;
use std::process::Command;

#[test]
fn quick_runs_every_case() {
    let out = Command::new(env!("CARGO_BIN_EXE_ap-bench"))
        .args(["--quick", "--threads", "1"])
        .output()
        .expect("starting ap-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ap-bench --quick failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut keys = BTreeSet::new();
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(v["impl"], "rust", "{line}");
        assert_eq!(v["threads"], 1, "{line}");
        let samples = v["samples"].as_array().expect("samples array");
        assert!(!samples.is_empty(), "{line}");
        for s in samples {
            let x = s.as_f64().expect("numeric sample");
            assert!(x.is_finite() && x >= 0.0, "{line}");
        }
        keys.insert(v["key"].as_str().expect("key").to_string());
    }
    for key in [
        "train/lenet300-100/dense",
        "train/lenet300-100/masked",
        "train/conv2/dense",
        "train/conv2/masked",
        "train/conv2/masked/part/optimizer",
        "step/lenet300-100/masked",
        "step/lenet300-100/unmasked",
        "step/conv2/masked",
        "step/conv2/unmasked",
        "eval/lenet300-100/plain",
        "eval/lenet300-100/probed",
        "eval/conv2/plain",
        "eval/conv2/probed",
        "select/ours",
        "select/kthvalue-threshold",
        "resnet20/step",
        "imp/peak",
    ] {
        assert!(keys.contains(key), "no series {key}; got {keys:?}");
    }
}
