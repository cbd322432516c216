//! Every method with and without AP on real MNIST (short training): exact target
//! density, per-event records, and the same density with and without AP.

use ap_criteria::{Allocation, Criterion};
use ap_data::Dataset;
use ap_models::ModelKind::LeNet300_100;
use ap_prune::{
    run_method, ApConfig, GmpConfig, GranetConfig, ImpConfig, LrrConfig, Method, OneShotConfig,
    RiglConfig, RoundRecord, RunSeeds, RunSetup,
};
use ap_train::TrainConfig;
use tch::Device;

fn run(method: &Method, ap: Option<&ApConfig>, data: &Dataset) -> Vec<RoundRecord> {
    ap_tensor::seed_torch(1, "init");
    let model = ap_models::build(LeNet300_100, &[1, 28, 28], 10, Device::Cpu).unwrap();
    let train: TrainConfig = ap_testkit::fixtures::lenet_train(200).try_into().unwrap();
    let setup = RunSetup {
        ap,
        seeds: RunSeeds { data: 2, prune: 3 },
        eval_batch: 2000,
        ..RunSetup::new(&model, data, &train, method)
    };
    run_method(&setup, |_, _| Ok(()), |_, _| {}).unwrap()
}

#[test]
#[allow(clippy::too_many_lines)] // every method, each checked in place
fn every_method_reaches_its_density_on_mnist() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let data = ap_e2e::mnist();
    let total = 266_200i64;
    let g = Allocation::Global;
    let one_shot = |criterion, at_init| {
        Method::OneShot(OneShotConfig {
            density: 0.05,
            criterion,
            at_init,
            fine_tune_iterations: Some(100),
            allocation: g.clone(),
            synflow_iterations: 10,
            snip_batches: 1,
        })
    };
    let five_pct = total - (0.95 * total as f64).round() as i64;
    let mut after_rounds = total;
    for _ in 0..3 {
        after_rounds -= (0.6 * after_rounds as f64).floor() as i64;
    }
    let cases = vec![
        (
            Method::Imp(ImpConfig {
                rounds: 3,
                rate: 0.6,
                criterion: Criterion::Magnitude,
                allocation: g.clone(),
                rewind_iteration: 50,
            }),
            after_rounds,
        ),
        (
            Method::Lrr(LrrConfig {
                rounds: 3,
                rate: 0.6,
                criterion: Criterion::Magnitude,
                allocation: g.clone(),
            }),
            after_rounds,
        ),
        (one_shot(Criterion::Magnitude, false), five_pct),
        (one_shot(Criterion::Snip, true), five_pct),
        (one_shot(Criterion::Synflow, true), five_pct),
        (
            Method::Gmp(GmpConfig {
                final_density: 0.05,
                begin: 20,
                end: 160,
                every: 20,
                allocation: g.clone(),
            }),
            five_pct,
        ),
        (
            Method::Granet(GranetConfig {
                final_density: 0.05,
                initial_density: 1.0,
                begin: 20,
                end: 160,
                every: 20,
                drop_fraction: 0.5,
                allocation: g.clone(),
            }),
            five_pct,
        ),
    ];
    for (method, kept) in cases {
        let plain = run(&method, None, &data);
        let with_ap = run(&method, Some(&ApConfig::with_rate(0.06)), &data);
        for records in [&plain, &with_ap] {
            assert_eq!(
                records.last().unwrap().density.kept,
                kept,
                "{}",
                method.name()
            );
            assert!(
                records.iter().flat_map(|r| &r.events).count() >= 1,
                "{} records its events",
                method.name()
            );
        }
        let ap_removed: i64 = with_ap
            .iter()
            .flat_map(|r| &r.events)
            .map(|e| e.ap_removed)
            .sum();
        assert!(ap_removed > 0, "{}: AP took part", method.name());
    }
    // RigL: ERK densities floor per layer, so the total is within a layer count of 5%.
    let rigl = Method::Rigl(RiglConfig {
        density: 0.05,
        every: 20,
        drop_fraction: 0.3,
        end_fraction: 0.75,
        dense_layers: vec![],
        dense_in_budget: false,
    });
    let in_drop = ApConfig {
        in_drop_and_grow: true,
        ..ApConfig::with_rate(0.0)
    };
    for ap in [None, Some(in_drop)] {
        let r = run(&rigl, ap.as_ref(), &data);
        let kept = r[0].density.kept;
        assert!(
            (kept - (0.05 * total as f64) as i64).abs() <= 3,
            "rigl kept {kept}"
        );
        assert!(r[0]
            .events
            .iter()
            .all(|e| e.regrown == e.dropped && e.host_removed + e.ap_removed == 0));
        if ap.is_some() {
            assert!(
                r[0].events.iter().any(|e| e.ap_dropped > 0),
                "AP took part in the drop"
            );
        }
    }
}
