//! IMP with and without AP on real MNIST, through the library crates: the density
//! schedule is exact, AP takes its budget from negative weights, pruning makes dynamic
//! DNR fall, and sparse tickets keep the dense accuracy (short training).

use ap_data::Dataset;
use ap_models::ModelKind::LeNet300_100;
use ap_prune::{run_method, ApConfig, ImpConfig, Method, RoundRecord, RunSeeds, RunSetup};
use ap_train::TrainConfig;
use tch::Device;

fn run(ap: Option<ApConfig>, data: &Dataset) -> Vec<RoundRecord> {
    ap_tensor::seed_torch(11, "init");
    let model = ap_models::build(LeNet300_100, &[1, 28, 28], 10, Device::Cpu).unwrap();
    let train: TrainConfig = ap_testkit::fixtures::lenet_train(1000).try_into().unwrap();
    let imp = Method::Imp(ImpConfig {
        rounds: 4,
        rate: 0.5,
        criterion: Default::default(),
        allocation: Default::default(),
        rewind_iteration: 0,
    });
    let mut masks = vec![];
    let setup = RunSetup {
        ap: ap.as_ref(),
        seeds: RunSeeds { data: 5, prune: 6 },
        ..RunSetup::new(&model, data, &train, &imp)
    };
    let records = run_method(
        &setup,
        |_, m| {
            masks.push(m.copy());
            Ok(())
        },
        |_, _| {},
    )
    .unwrap();
    for w in masks.windows(2) {
        assert!(
            w[1].is_subset_of(&w[0]),
            "each round's mask is a subset of the previous one"
        );
    }
    records
}

#[test]
fn imp_with_and_without_ap_on_mnist() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let data = ap_e2e::mnist();
    let plain = run(None, &data);
    let with_ap = run(Some(ApConfig::with_rate(0.05)), &data);
    let total = 266_200i64;
    let mut expected = total;
    for (i, (a, b)) in plain.iter().zip(&with_ap).enumerate() {
        // both reach exactly the same density: the product of per-event floors
        assert_eq!(a.density.kept, expected, "round {i}");
        assert_eq!(b.density.kept, expected, "round {i}");
        expected -= expected / 2;
        if let Some(e) = b.events.first() {
            assert_eq!(
                e.ap_removed + e.ap_shortfall,
                (0.05 * e.surviving as f64).floor() as i64
            );
            assert!(e.ap_removed > 0);
        }
        for r in [a, b] {
            assert!(
                (0.0..=1.0).contains(&r.test.dnr.dynamic)
                    && r.test.dnr.static_ <= r.test.dnr.dynamic
            );
        }
    }
    assert_eq!(
        plain[0].test, with_ap[0].test,
        "the dense round is the same run"
    );
    let (dense, last) = (&plain[0], plain.last().unwrap());
    assert!(
        dense.test.accuracy > 0.95,
        "dense accuracy {}",
        dense.test.accuracy
    );
    assert!(
        last.test.dnr.dynamic < dense.test.dnr.dynamic - 0.05,
        "dynamic DNR falls with density: {} → {}",
        dense.test.dnr.dynamic,
        last.test.dnr.dynamic
    );
    assert!(
        last.test.accuracy > dense.test.accuracy - 0.01,
        "a 6.25% ticket keeps the dense accuracy: {} vs {}",
        last.test.accuracy,
        dense.test.accuracy
    );
}
