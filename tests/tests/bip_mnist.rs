//! BiP with and without AP on real MNIST through the runner (`ap_runs::execute`, as `ap
//! run` does): a short pre-training, a short bi-level phase, exact density, the bi-level
//! round's event, AP's share, and accuracy far above chance.

use ap_runs::{execute, RunOptions, RunSpec};

fn spec(ap: bool) -> RunSpec {
    let text = format!(
        r#"model = "lenet300-100"
dataset = "mnist"
seed = 4
[train]
batch_size = 60
iterations = 300
optimizer = {{ kind = "adam", lr = 1.2e-3 }}
[prune]
method = "bip"
density = 0.05
lower_lr = 1.2e-3
iterations = 300
[ap]
enabled = {ap}
"#
    );
    RunSpec::parse(&text, "bip.toml").unwrap()
}

#[test]
fn bip_with_and_without_ap_on_mnist() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let runs = tempfile::tempdir().unwrap();
    let options = RunOptions::quiet(ap_data::default_data_dir(), tch::Device::Cpu);
    let total = 266_200i64;
    let kept = (0.05 * total as f64).round() as i64;
    let mut finals = vec![];
    for ap in [false, true] {
        let records = execute(&spec(ap), runs.path(), &options).unwrap();
        assert_eq!(records.len(), 2, "pre-training and the bi-level round");
        let (dense, bip) = (&records[0], &records[1]);
        assert_eq!(dense.density.kept, total);
        assert_eq!(bip.density.kept, kept, "ap = {ap}");
        let e = bip.events[0];
        assert_eq!(
            (e.surviving, e.host_removed + e.ap_removed),
            (total, total - kept)
        );
        assert_eq!(ap, e.ap_removed > 0, "{e:?}");
        assert_eq!(bip.epochs.last().unwrap().iteration, 300);
        assert!(
            bip.test.accuracy > 0.85,
            "ap = {ap}: accuracy {} at 5% density",
            bip.test.accuracy
        );
        eprintln!(
            "ap = {ap}: dense {:.4} ({:.2} ms/iteration), bip {:.4} ({:.2} ms/iteration)",
            dense.test.accuracy,
            1e3 * dense.seconds / 300.0,
            bip.test.accuracy,
            1e3 * bip.seconds / 300.0
        );
        finals.push(bip.clone());
    }
    assert_eq!(finals[0].density.kept, finals[1].density.kept);
    assert_eq!(finals[0].density.total, finals[1].density.total);
}
