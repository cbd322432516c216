//! Convolutional models end to end on CPU: ResNet-20 learns a CIFAR-10-format fixture
//! (written by the test) with augmentation, and IMP with AP runs on it.

use ap_data::{cifar, Augment, Dataset, DatasetKind};
use ap_models::ModelKind::ResNet20;
use ap_prune::{run_method, ApConfig, ImpConfig, Method, RunSeeds, RunSetup};
use ap_train::{train_phase, NoHook, PhaseStart, TrainConfig};
use tch::Device;

/// SGD 0.05 with momentum 0.9 and weight decay 5e-4, batches of 32, standard augmentation.
fn recipe(iterations: i64) -> TrainConfig {
    let sgd = ap_testkit::fixtures::sgd(0.05, 0.9, 5e-4, false);
    let mut cfg: TrainConfig = ap_testkit::fixtures::train(sgd, 32, iterations)
        .try_into()
        .unwrap();
    cfg.augment = Augment::standard();
    cfg
}

#[test]
fn resnet20_learns_a_cifar_fixture_and_prunes_with_ap() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    cifar::write_fixture(dir.path(), DatasetKind::Cifar10, 320, 64, 7).unwrap();
    let data = Dataset::load(DatasetKind::Cifar10, dir.path(), Device::Cpu).unwrap();
    assert_eq!(data.train.images.size(), vec![320, 3, 32, 32]);
    tch::manual_seed(0);
    let model = ap_models::build(ResNet20, &[3, 32, 32], 10, Device::Cpu).unwrap();
    let phase = train_phase(
        &model,
        &data.train,
        None,
        &recipe(60),
        PhaseStart::fresh(1),
        &mut NoHook,
        |_| {},
    )
    .unwrap();
    let (first, last) = (
        phase.epochs.first().unwrap().train_loss,
        phase.epochs.last().unwrap().train_loss,
    );
    assert!(last < 0.7 * first, "loss falls: {first} → {last}");
    assert!(phase.train_dnr.samples > 0 && phase.train_dnr.sites.len() == 19);

    let imp = Method::Imp(ImpConfig {
        rounds: 1,
        rate: 0.5,
        criterion: Default::default(),
        allocation: Default::default(),
        rewind_iteration: 0,
    });
    let (train, ap) = (recipe(10), ApConfig::with_rate(0.05));
    let setup = RunSetup {
        ap: Some(&ap),
        seeds: RunSeeds { data: 1, prune: 2 },
        eval_batch: 64,
        ..RunSetup::new(&model, &data, &train, &imp)
    };
    let records = run_method(&setup, |_, _| Ok(()), |_, _| {}).unwrap();
    let e = records[1].events[0];
    assert_eq!(e.host_removed + e.ap_removed, e.surviving / 2);
    assert!(e.ap_removed > 0);
    assert_eq!(
        records[1].test.dnr.sites.len(),
        19,
        "every ReLU site of ResNet-20 is measured"
    );
}
