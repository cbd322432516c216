//! LeNet-5 (Caffe) on real MNIST with its paper's recipe (`lenet5-caffe`: Caffe's xavier
//! initialisation, SGD with the `inv` learning-rate policy), shortened to one epoch: it
//! learns (the full 10,000-iteration recipe reaches ≥ 99.0%, docs/models.md), and every
//! ReLU site is measured.

use ap_eval::evaluate;
use ap_models::{initialise, InitScheme, ModelKind};
use ap_train::{train_phase, LrSchedule, NoHook, PhaseStart, TrainConfig};
use tch::Device;

#[test]
fn lenet5_learns_mnist_in_one_epoch_of_its_recipe() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let data = ap_e2e::mnist();
    let mut train: TrainConfig = ap_runs::recipes::recipe("lenet5-caffe")
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        train.schedule,
        LrSchedule::Inv {
            gamma: 1e-4,
            power: 0.75
        }
    );
    assert_eq!(
        ap_runs::recipes::recipe_init("lenet5-caffe"),
        Some("caffe_xavier")
    );
    train.iterations = 938; // one epoch of 60,000 at batch 64
    ap_tensor::seed_torch(0, "init");
    let model = ap_models::build(ModelKind::LeNet5, &[1, 28, 28], 10, Device::Cpu).unwrap();
    initialise(&model, InitScheme::CaffeXavier);
    assert_eq!(model.num_parameters(), 431_080);
    let phase = train_phase(
        &model,
        &data.train,
        None,
        &train,
        PhaseStart::fresh(1),
        &mut NoHook,
        |_| {},
    )
    .unwrap();
    let test = evaluate(&model, &data.test.images, &data.test.labels, 1000);
    assert!(test.accuracy >= 0.98, "one epoch: {}", test.accuracy);
    assert_eq!(phase.train_dnr.sites.len(), 3);
    assert_eq!(test.dnr.sites.len(), 3);
    assert!(test.dnr.static_ <= test.dnr.dynamic && test.dnr.dynamic < 1.0);
}
