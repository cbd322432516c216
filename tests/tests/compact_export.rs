//! Compaction and `ap export --format masked|compact` end to end on real data: short IMP
//! runs of LeNet-300-100 and LeNet-5 on MNIST. On the whole test set the compacted
//! network's outputs equal the masked network's (≤ 1e-4, identical predictions), and the
//! masked network's predictions are the model's; the exported files, run by the PyTorch
//! block of docs/export.md (torch from setup's venv), reproduce the run's recorded test
//! accuracy. Plus the errors for a directory that is not a finished run.

use std::path::Path;
use std::process::Command;

use ap_compact::InferenceNet;
use ap_runs::export::{export_network, NetworkFormat};
use ap_runs::runner::FinishedNetwork;
use ap_runs::{execute, RunDir, RunOptions, RunSpec};
use tch::{Kind, Tensor};

fn imp_spec(model: &str) -> RunSpec {
    let text = format!(
        r#"model = "{model}"
dataset = "mnist"
seed = 5
[train]
batch_size = 60
iterations = 300
optimizer = {{ kind = "adam", lr = 1.2e-3 }}
[prune]
method = "imp"
rounds = 4
rate = 0.6
"#
    );
    RunSpec::parse(&text, "imp.toml").unwrap()
}

/// The `python` block of docs/export.md.
fn doc_loader() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/export.md"))
            .unwrap();
    let start = doc
        .find("```python\nimport json, torch\nimport torch.nn.functional")
        .expect("the loader block in docs/export.md");
    let body = &doc[start + "```python\n".len()..];
    body[..body.find("```").unwrap()].to_string()
}

fn predictions(logits: &Tensor) -> Tensor {
    logits.argmax(1, false)
}

#[test]
fn compacted_networks_match_and_exports_run_in_pytorch() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let options = RunOptions::quiet(ap_data::default_data_dir(), tch::Device::Cpu);
    let test_set = tmp.path().join("test.safetensors");
    for model in ["lenet300-100", "lenet5"] {
        let spec = imp_spec(model);
        let records = execute(&spec, &runs, &options).unwrap();
        let recorded = records.last().unwrap().test.accuracy;
        let run_dir = RunDir::of(&runs, &spec).path;
        let run = FinishedNetwork::load(&run_dir, "test", &options).unwrap();
        let (images, labels) = (&run.data.test.images, &run.data.test.labels);
        if !test_set.exists() {
            ap_tensor::save_safetensors(
                &test_set,
                &[
                    ("images".into(), images.shallow_clone()),
                    ("labels".into(), labels.shallow_clone()),
                ],
            )
            .unwrap();
        }
        let input = images.size()[1..].to_vec();
        let masked = InferenceNet::from_model(&run.model, &run.named_masks(), &input).unwrap();
        let (compact, changes) = masked.compact();
        let expected = tch::no_grad(|| run.model.forward(images, false));
        let y = masked.forward(images);
        let z = compact.forward(images);
        let diff = (&z - &y).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-4,
            "{model}: compaction changed outputs by {diff}"
        );
        assert!(
            predictions(&z).equal(&predictions(&y)),
            "{model}: predictions differ"
        );
        assert!(
            predictions(&y).equal(&predictions(&expected)),
            "{model}: the masked network is not the model"
        );
        let correct = predictions(&z)
            .eq_tensor(labels)
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(
            correct as f64 / labels.size()[0] as f64,
            recorded,
            "{model}"
        );
        let (before, after) = (masked.cost(), compact.cost());
        assert!(
            after.macs < before.macs,
            "{model}: IMP at {:.3} leaves dead units: {changes:?}",
            records.last().unwrap().density.density()
        );
        assert!(after.nonzero_macs <= before.nonzero_macs);

        // The exports, run by the documented PyTorch block.
        for (format, name) in [
            (NetworkFormat::Masked, "masked"),
            (NetworkFormat::Compact, "compact"),
        ] {
            let out = tmp.path().join(format!("{model}-{name}.safetensors"));
            let e = export_network(&run_dir, &out, format, &ap_data::default_data_dir(), false)
                .unwrap();
            assert_eq!(e.test_accuracy, recorded);
            assert_eq!(e.cost, if name == "masked" { before } else { after });
            let accuracy = pytorch_accuracy(&test_set, &out);
            assert!(
                (accuracy - recorded).abs() <= 1e-4,
                "{model} {name}: PyTorch {accuracy} vs the run's {recorded}"
            );
        }
    }

    drop_inactive_and_errors(tmp.path(), &runs);
}

/// Accuracy on the saved test split of the exported network at `out`, run by the
/// documented PyTorch block.
fn pytorch_accuracy(test_set: &Path, out: &Path) -> f64 {
    let script = format!(
        "{}\nimgs = load_safetensors({test:?})\nmeta, net = load_network({out:?})\nwith torch.no_grad():\n    pred = net(imgs['images']).argmax(1)\nprint(json.dumps({{'accuracy': (pred == imgs['labels']).double().mean().item()}}))\n",
        doc_loader(),
        test = test_set.to_str().unwrap(),
        out = out.to_str().unwrap(),
    );
    let o = Command::new(ap_e2e::reference_python())
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: the documented loader failed:\n{}",
        out.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["accuracy"].as_f64().unwrap()
}

/// `--drop-inactive` records the test accuracy of what it wrote (exact on the training set
/// only) and needs the compact format; a directory that is not a run or not finished is an
/// error that says so.
fn drop_inactive_and_errors(tmp: &Path, runs: &Path) {
    // --drop-inactive: exact on the training set only, so it records the test accuracy
    // of what it wrote; only with the compact format.
    let spec = imp_spec("lenet300-100");
    let run_dir = RunDir::of(runs, &spec).path;
    let out = tmp.join("inactive.safetensors");
    let lean = export_network(
        &run_dir,
        &out,
        NetworkFormat::Compact,
        &ap_data::default_data_dir(),
        true,
    )
    .unwrap();
    let i = lean.inactive.clone().expect("recorded");
    assert!((i.test_accuracy - lean.test_accuracy).abs() < 0.01, "{i:?}");
    assert!(
        lean.cost.params
            <= export_network(
                &run_dir,
                &out,
                NetworkFormat::Compact,
                &ap_data::default_data_dir(),
                false
            )
            .unwrap()
            .cost
            .params
    );
    let err = export_network(
        &run_dir,
        &out,
        NetworkFormat::Masked,
        &ap_data::default_data_dir(),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--format compact"), "{err}");

    // Not a run, and not finished: errors that say so.
    let out = tmp.join("x.safetensors");
    let err = export_network(
        tmp,
        &out,
        NetworkFormat::Compact,
        &ap_data::default_data_dir(),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a run directory"), "{err}");
    let spec = imp_spec("lenet300-100");
    let unfinished = tmp.join("unfinished");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::copy(
        RunDir::of(runs, &spec).path.join("spec.toml"),
        unfinished.join("spec.toml"),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        export_network(
            &unfinished,
            &out,
            NetworkFormat::Masked,
            &ap_data::default_data_dir(),
            false,
        )
        .unwrap_err()
    );
    assert!(err.contains("not finished"), "{err}");
}
