//! `method = "bip"` through the spec layer: its run key pinned against the hand-written
//! canonical JSON of `tests/reference/run_key.py`, its defaults written out, errors that
//! name the field, and the time estimate counting a bi-level iteration as two.

use ap_runs::estimate::{remaining_iterations, total_iterations};
use ap_runs::RunSpec;

const SPEC: &str = r#"model = "lenet300-100"
dataset = "mnist"
seed = 1
[train]
batch_size = 60
iterations = 3000
optimizer = { kind = "sgd", lr = 0.1, momentum = 0.9, weight_decay = 5e-4 }
schedule = { kind = "cosine" }
[prune]
method = "bip"
density = 0.05
iterations = 2000
[ap]
enabled = true
"#;

/// The golden key of `tests/reference/run_key.py` (`bip+ap-lenet300-100-mnist-s1`).
#[test]
fn bip_run_key_is_pinned() {
    let _g = ap_testkit::torch_lock(); // validation builds the model to list its layers
    let spec = RunSpec::parse(SPEC, "bip.toml").unwrap();
    spec.validate().unwrap();
    let json = spec.canonical_json();
    assert!(
        json.contains(
            "\"prune\":{\"method\":\"bip\",\"density\":0.05,\"lower_lr\":0.01,\"upper_lr\":0.1,\
             \"implicit_lr\":0.0001,\"pretrain\":true,\"iterations\":2000,\
             \"fine_tune_iterations\":null}"
        ),
        "{json}"
    );
    assert_eq!(
        spec.dir_name(),
        "bip+ap-lenet300-100-mnist-s1-a490bbb5355a6959",
        "{json}"
    );
}

#[test]
fn bip_settings_are_checked_by_name() {
    let _g = ap_testkit::torch_lock();
    for (line, field) in [
        ("lower_lr = 0.0", "prune.lower_lr"),
        ("upper_lr = -1.0", "prune.upper_lr"),
        ("implicit_lr = -1e-4", "prune.implicit_lr"),
        ("fine_tune_iterations = 0", "prune.fine_tune_iterations"),
    ] {
        let text = SPEC.replace("iterations = 2000", &format!("iterations = 2000\n{line}"));
        let spec = RunSpec::parse(&text, "bip.toml").unwrap();
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{line}: {e}");
    }
    let bad = SPEC.replace("density = 0.05", "density = 1.5");
    let e = RunSpec::parse(&bad, "bip.toml")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("prune.density"), "{e}");
    let unknown = SPEC.replace("density = 0.05", "density = 0.05\nrate = 0.2");
    let e = RunSpec::parse(&unknown, "bip.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("rate"), "{e}");
}

/// Pre-training (3,000), the bi-level phase (2,000 iterations of two passes each), and a
/// fine-tuning round when asked for.
#[test]
fn bip_time_estimate_counts_its_phases() {
    let spec = RunSpec::parse(SPEC, "bip.toml").unwrap();
    assert_eq!(total_iterations(&spec), 3000 + 2 * 2000);
    assert_eq!(remaining_iterations(&spec, 1), 2 * 2000);
    assert_eq!(remaining_iterations(&spec, 2), 0);
    let text = SPEC.replace(
        "iterations = 2000",
        "iterations = 2000\nfine_tune_iterations = 500",
    );
    let ft = RunSpec::parse(&text, "bip.toml").unwrap();
    assert_eq!(total_iterations(&ft), 3000 + 4000 + 500);
    assert_eq!(ft.prune.round_count(), 3);
}
