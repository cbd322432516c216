//! Property tests of the methods on a small LeNet and toy data.

use super::*;
use crate::dynamic::Gradual;
use crate::rounds::{validate_rates, SnapshotAt};
use crate::schedule::gmp_target_kept;
use ap_criteria::{Allocation, Criterion, HostCriterion};
use ap_data::{Dataset, DatasetKind, Split};
use ap_mask::Mask;
use ap_models::Model;
use ap_tensor::NamedParams;
use ap_train::{train_phase, NoHook, Optimizer, OptimizerSpec, PhaseStart, StepHook, TrainConfig};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

pub(crate) use ap_testkit::torch_lock;

mod nm;

/// A global magnitude host: the model, and nothing else (toy input shape).
fn host_of(m: &Model) -> HostCriterion<'_> {
    HostCriterion {
        criterion: Criterion::Magnitude,
        allocation: &Allocation::Global,
        model: m,
        batches: &[],
        input_shape: &[1, 2, 2],
        seed: 1,
        synflow_iterations: 1,
        given_scores: None,
        pattern: None,
    }
}

/// A hand-set schedule for the hook's tests: GMP-shaped pruning from `prune` and
/// drop-and-grow from `regrow`, with settings the methods' own configs fix.
struct Scripted {
    /// (begin, end, every, initial sparsity, final sparsity) of the pruning events.
    prune: Option<(u64, u64, u64, f64, f64)>,
    /// Drop-and-grow: from `begin` every `every` steps before `stop`.
    regrow: Option<ScriptedRegrow>,
}

struct ScriptedRegrow {
    begin: u64,
    every: u64,
    stop: u64,
    initial: f64,
    decay_until: u64,
    rounding: DropRounding,
    dense_layers: Vec<String>,
}

impl crate::dynamic::DuringTraining for Scripted {
    fn prune_to(&self, t: u64, total: i64) -> Option<(i64, &Allocation)> {
        let (begin, end, every, from, to) = self.prune?;
        crate::schedule::is_event_step(t, begin, end, every).then(|| {
            (
                gmp_target_kept(t, begin, end, from, to, total),
                &Allocation::Global,
            )
        })
    }

    fn drop_grow(&self, t: u64, _iterations: u64) -> Option<DropGrow<'_>> {
        let r = self.regrow.as_ref()?;
        let due = t >= r.begin && t < r.stop && (t - r.begin) % r.every == 0;
        due.then(|| DropGrow {
            fraction: crate::schedule::cosine_decay(r.initial, t, r.decay_until),
            rounding: r.rounding,
            dense_layers: &r.dense_layers,
        })
    }
}

/// RigL-shaped: drop-and-grow every `every` steps from `every` until `stop`.
fn rigl_script(
    every: u64,
    stop: u64,
    initial: f64,
    decay_until: u64,
    rounding: DropRounding,
) -> Scripted {
    Scripted {
        prune: None,
        regrow: Some(ScriptedRegrow {
            begin: every,
            every,
            stop,
            initial,
            decay_until,
            rounding,
            dense_layers: vec![],
        }),
    }
}

/// A run of `method` on `m` and `data` with the test recipe's seeds and batch size.
fn setup<'a>(
    m: &'a Model,
    data: &'a Dataset,
    cfg: &'a TrainConfig,
    method: &'a Method,
    ap: Option<&'a ApConfig>,
) -> RunSetup<'a> {
    RunSetup {
        ap,
        seeds: RunSeeds { data: 3, prune: 4 },
        eval_batch: 32,
        ..RunSetup::new(m, data, cfg, method)
    }
}

fn toy(n: i64, seed: i64) -> Dataset {
    toy_for("lenet300-100", n, seed)
}

/// Toy data of the input side `arch` needs: 1×2×2, or 1×4×4 for a ResNet (two stride-2
/// stages).
fn toy_for(arch: &str, n: i64, seed: i64) -> Dataset {
    let side = side_of(arch);
    tch::manual_seed(seed);
    let split = |n: i64| {
        let (images, labels) = ap_testkit::tensors::toy_classification(n, side);
        Split { images, labels }
    };
    Dataset {
        kind: DatasetKind::Mnist,
        train: split(n),
        test: split(n / 2),
    }
}

fn model(seed: i64) -> Model {
    model_of("lenet300-100", seed)
}

/// A registered model for [`toy_for`]'s inputs (a ResNet brings BatchNorm).
fn model_of(arch: &str, seed: i64) -> Model {
    let side = side_of(arch);
    tch::manual_seed(seed);
    ap_models::build(arch.parse().unwrap(), &[1, side, side], 2, Device::Cpu).unwrap()
}

/// LeNet-300-100 for MNIST's 1×28×28 inputs, initialised from `seed`.
fn model_for_mnist(seed: i64) -> Model {
    tch::manual_seed(seed);
    let kind = ap_models::ModelKind::LeNet300_100;
    ap_models::build(kind, &[1, 28, 28], 10, Device::Cpu).unwrap()
}

fn side_of(arch: &str) -> i64 {
    if arch.starts_with("resnet") {
        4
    } else {
        2
    }
}

/// SGD (lr 0.05, momentum 0.9, weight decay 1e-3), batches of 16, `iterations` steps.
fn recipe(iterations: u64) -> TrainConfig {
    use ap_testkit::fixtures::{sgd, train};
    let cfg = train(sgd(0.05, 0.9, 1e-3, false), 16, iterations as i64);
    cfg.try_into().expect("a training configuration")
}

/// SGD without momentum or decay at lr 0.1: an optimizer for hooks that only need one.
fn plain_sgd(vs: &tch::nn::VarStore, mask: Option<&Mask>) -> Optimizer {
    Optimizer::new(
        OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        },
        vs,
        mask,
    )
}

fn zero_where_pruned(params: &NamedParams, mask: &Mask) -> bool {
    params.iter().zip(mask.iter()).all(|((_, w), (_, m))| {
        w.ne(0.0)
            .logical_and(&m.eq(0.0))
            .sum(Kind::Int64)
            .int64_value(&[])
            == 0
    })
}

fn run(method: &Method, ap: Option<&ApConfig>, iterations: u64) -> (Vec<RoundRecord>, Vec<Mask>) {
    run_arch("lenet300-100", method, ap, iterations)
}

fn run_arch(
    arch: &str,
    method: &Method,
    ap: Option<&ApConfig>,
    iterations: u64,
) -> (Vec<RoundRecord>, Vec<Mask>) {
    let data = toy_for(arch, 64, 1);
    let m = model_of(arch, 2);
    let mut masks = vec![];
    let cfg = recipe(iterations);
    let records = run_method(
        &setup(&m, &data, &cfg, method, ap),
        |_, mask| {
            masks.push(mask.copy());
            Ok(())
        },
        |_, _| {},
    )
    .unwrap();
    (records, masks)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Round-based events: after k events at rate p (with or without AP) the kept count
    /// is the product of per-event floors, host + AP = floor(p·S), AP takes floor(p_AP·S)
    /// minus its shortfall, each mask is a subset of the previous one, pruned weights are 0.
    #[test]
    fn density_after_k_events(k in 1usize..7, p in 0.05f64..0.6, ap_share in 0.0f64..0.5, with_ap in any::<bool>(), criterion in prop_oneof![Just(Criterion::Magnitude), Just(Criterion::Random), Just(Criterion::Lamp)], seed in 0i64..50) {
        let _g = torch_lock();
        let m = model(seed);
        let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
        let start = params.snapshot();
        let _ = tch::no_grad(|| params.tensors()[0].shallow_clone().g_add_(&(Tensor::randn_like(params.tensors()[0]) * 0.1)));
        let ap = with_ap.then(|| ApConfig::with_rate(p * ap_share));
        let host = HostCriterion { seed: 9, ..host_of(&m) };
        let mut mask = Mask::dense(&params);
        let mut expected = params.numel();
        for i in 0..k {
            let prev = mask.copy();
            let budget = Budget::from_rates(mask.kept(), p, ap.as_ref(), i);
            let e = pruning_event(&params, &mut mask, &start, &HostCriterion { criterion, allocation: &Allocation::Global, ..host }, ap.as_ref(), EventAt { budget, index: i, iteration: None }).unwrap();
            // The release's budget, computed here: n = floor(p·S), n_AP = floor(p_AP·S).
            let n = (p * expected as f64).floor() as i64;
            let n_ap = if with_ap { ((p * ap_share) * expected as f64).floor() as i64 } else { 0 };
            prop_assert_eq!(e.surviving, expected);
            prop_assert_eq!(budget.n, n);
            prop_assert_eq!(e.host_removed, n - n_ap + e.ap_shortfall);
            prop_assert_eq!(e.ap_removed + e.ap_shortfall, n_ap);
            expected -= e.host_removed + e.ap_removed;
            prop_assert_eq!(mask.kept(), expected);
            prop_assert!(mask.is_subset_of(&prev));
        }
        // with or without AP (the host covers AP's shortfall): the product of per-event floors
        let mut product = params.numel();
        for _ in 0..k { product -= (p * product as f64).floor() as i64; }
        prop_assert_eq!(mask.kept(), product);
        prop_assert!(zero_where_pruned(&params, &mask));
    }

    /// GMP: after each event the kept count equals the cubic schedule's target exactly.
    #[test]
    fn gmp_follows_the_cubic_schedule(final_density in 0.05f64..0.9, every in 1u64..6, with_ap in any::<bool>()) {
        let _g = torch_lock();
        let (begin, end) = (3u64, 27u64);
        let ap = with_ap.then(|| ApConfig::with_rate(0.0));
        let method = Method::Gmp(GmpConfig { final_density, begin, end, every, allocation: Allocation::Global });
        let (records, _) = run(&method, ap.as_ref(), 30);
        let r = &records[0];
        let total = r.density.total;
        let mut kept = total;
        for e in &r.events {
            let t = e.iteration.unwrap();
            prop_assert!(is_event(t, begin, end, every));
            prop_assert_eq!(e.surviving, kept);
            kept -= e.host_removed + e.ap_removed;
            prop_assert_eq!(kept, gmp_target_kept(t, begin, end, 0.0, 1.0 - final_density, total));
        }
        if (end - begin) % every == 0 {
            prop_assert_eq!(r.density.kept, total - ((1.0 - final_density) * total as f64).round() as i64);
        }
    }
}

fn is_event(t: u64, begin: u64, end: u64, every: u64) -> bool {
    crate::schedule::is_event_step(t, begin, end, every)
}

/// RigL through the training hook: every event drops and regrows the same number per
/// layer, the dense layer (fc3, never pruned here) stays fully dense, pruned weights
/// stay 0, and with `ap.in_drop_and_grow` AP takes part of every drop.
#[test]
fn rigl_hook_keeps_density_and_dense_layers() {
    let _g = torch_lock();
    let data = toy(64, 5);
    let m = model(6);
    let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
    for with_ap in [false, true] {
        let ap = with_ap.then(|| ApConfig {
            in_drop_and_grow: true,
            ..ApConfig::with_rate(0.0)
        });
        let mut mask = Mask::dense(&params);
        let sel: Vec<Tensor> = params
            .iter()
            .map(|(n, t)| {
                if n == "fc3.weight" {
                    t.zeros_like().to_kind(Kind::Bool)
                } else {
                    Tensor::rand_like(t).lt(0.5)
                }
            })
            .collect();
        mask.remove(&sel).unwrap();
        mask.apply(&params).unwrap();
        let before = mask.report();
        let shared = mask.shallow_clone();
        let host = host_of(&m);
        let mut schedule = rigl_script(5, 30, 0.3, 40, DropRounding::Floor);
        if let Some(r) = schedule.regrow.as_mut() {
            r.dense_layers = vec!["fc3.weight".into()];
        }
        let mut hook = Gradual::new(
            &params,
            mask.shallow_clone(),
            ap.as_ref(),
            host,
            &schedule,
            40,
        );
        let phase = train_phase(
            &m,
            &data.train,
            Some(&shared),
            &recipe(40),
            PhaseStart::fresh(1),
            &mut hook,
            |_| {},
        );
        let (events, phase) = hook.finish(phase).unwrap();
        assert_eq!(events.len(), 5, "events at 5, 10, 15, 20, 25");
        for e in &events {
            assert_eq!(e.regrown, e.dropped, "as many grown as dropped");
            assert_eq!(e.host_removed + e.ap_removed, 0, "RigL prunes nothing");
            assert!(e.regrown > 0);
            assert_eq!(with_ap, e.ap_dropped > 0, "AP in the drop only when asked");
        }
        let after = mask.report();
        for (b, a) in before.layers.iter().zip(&after.layers) {
            assert_eq!(b.kept, a.kept, "per-layer density unchanged in {}", b.name);
        }
        let fc3 = after
            .layers
            .iter()
            .find(|l| l.name == "fc3.weight")
            .unwrap();
        assert_eq!(fc3.kept, fc3.total, "the dense layer stays dense");
        assert!(zero_where_pruned(&params, &mask));
        assert!(!phase.epochs.is_empty());
    }
}

/// Leaf tensors of the given sizes with `.grad()` set to `grads` (through a backward
/// pass of Σ w·g).
fn params_with_grads(values: &[Vec<f32>], grads: &[Vec<f32>]) -> NamedParams {
    let params = NamedParams::from_entries(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    format!("l{i}.weight"),
                    Tensor::from_slice(v).set_requires_grad(true),
                )
            })
            .collect(),
    );
    let loss = params
        .tensors()
        .iter()
        .zip(grads)
        .map(|(w, g)| (*w * Tensor::from_slice(g)).sum(Kind::Float))
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
    loss.backward();
    params
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.detach().flatten(0, -1)).unwrap()
}

fn layer_strategy() -> impl Strategy<Value = Vec<(Vec<f32>, Vec<f32>, Vec<bool>)>> {
    prop::collection::vec(
        (1usize..40).prop_flat_map(|n| {
            (
                prop::collection::vec(-1.0f32..1.0, n),
                prop::collection::vec(-1.0f32..1.0, n),
                prop::collection::vec(prop::bool::weighted(0.6), n),
            )
        }),
        1..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Drop-and-grow, for any weights, gradients and mask: each layer keeps its count;
    /// a weight kept before and after has its old value; a newly grown connection is 0;
    /// every inactive weight is 0; the dense layer is untouched; grown positions were
    /// inactive after the drop and no inactive-after-drop position has a larger
    /// |gradient| than a grown one.
    #[test]
    fn drop_and_grow_keeps_reselected_values(layers in layer_strategy(), fraction in 0.0f64..1.0, ceil in any::<bool>(), dense_first in any::<bool>()) {
        let _g = torch_lock();
        let vals: Vec<Vec<f32>> = layers.iter().map(|l| l.0.clone()).collect();
        let grads: Vec<Vec<f32>> = layers.iter().map(|l| l.1.clone()).collect();
        let params = params_with_grads(&vals, &grads);
        let mut mask = Mask::from_entries(layers.iter().enumerate().map(|(i, l)| {
            let m: Vec<f32> = l.2.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
            (format!("l{i}.weight"), Tensor::from_slice(&m))
        }).collect());
        mask.apply(&params).unwrap();
        let w_before: Vec<Vec<f32>> = params.tensors().iter().map(|t| values(t)).collect();
        let m_before: Vec<Vec<f32>> = mask.tensors().iter().map(|t| values(t)).collect();
        let dense = if dense_first { vec!["l0.weight".to_string()] } else { vec![] };
        let spec = DropGrow { fraction, rounding: if ceil { DropRounding::Ceil } else { DropRounding::Floor }, dense_layers: &dense };
        let r = drop_and_grow(&params, &mut mask, &params.snapshot(), &spec, None).unwrap();
        prop_assert_eq!(r.regrown, r.host_dropped);
        let mut expected_drop = 0;
        let mut fresh = 0;
        for (l, ((wb, mb), (w, m))) in w_before.iter().zip(&m_before).zip(params.tensors().iter().zip(mask.tensors())).enumerate() {
            let (w, m) = (values(w), values(m));
            let kept = mb.iter().filter(|&&x| x > 0.5).count() as i64;
            prop_assert_eq!(m.iter().filter(|&&x| x > 0.5).count() as i64, kept, "layer {} keeps its count", l);
            if dense_first && l == 0 {
                prop_assert_eq!(&m, mb);
                prop_assert_eq!(&w, wb);
                continue;
            }
            let k = fraction * kept as f64;
            expected_drop += if ceil { k.ceil() } else { k.floor() } as i64;
            for i in 0..w.len() {
                match (mb[i] > 0.5, m[i] > 0.5) {
                    (true, true) => prop_assert_eq!(w[i], wb[i], "kept weight {} of layer {} changed", i, l),
                    (false, true) => { fresh += 1; prop_assert_eq!(w[i], 0.0) }
                    (_, false) => prop_assert_eq!(w[i], 0.0),
                }
            }
        }
        prop_assert_eq!(r.host_dropped, expected_drop);
        prop_assert_eq!(r.new_connections, fresh);
    }
}

/// GraNet's first event on a dense network: every layer drops ceil(½·n) and, since the
/// dropped positions are the only inactive ones, regrows exactly them — the mask and
/// every weight stay as they were (the defect this guards against reset them to 0).
#[test]
fn granet_first_event_on_a_dense_network_changes_nothing() {
    let _g = torch_lock();
    tch::manual_seed(3);
    let vals: Vec<Vec<f32>> = [50, 7]
        .iter()
        .map(|&n| Vec::<f32>::try_from(Tensor::randn([n], (Kind::Float, Device::Cpu))).unwrap())
        .collect();
    let grads: Vec<Vec<f32>> = [50, 7]
        .iter()
        .map(|&n| Vec::<f32>::try_from(Tensor::randn([n], (Kind::Float, Device::Cpu))).unwrap())
        .collect();
    let params = params_with_grads(&vals, &grads);
    let mut mask = Mask::dense(&params);
    let spec = DropGrow {
        fraction: 0.5,
        rounding: DropRounding::Ceil,
        dense_layers: &[],
    };
    let r = drop_and_grow(&params, &mut mask, &params.snapshot(), &spec, None).unwrap();
    assert_eq!(
        (r.host_dropped, r.regrown, r.new_connections),
        (25 + 4, 29, 0)
    );
    assert_eq!(mask.kept(), 57);
    for (w, v) in params.tensors().iter().zip(&vals) {
        assert_eq!(&values(w), v);
    }
}

/// The snapshot hook takes θ_k after exactly k steps: it equals a separate k-step run.
#[test]
fn weight_rewinding_snapshot_is_theta_k() {
    let _g = torch_lock();
    tch::set_num_threads(1);
    let data = toy(64, 7);
    let k = 6;
    let a = model(8);
    let pa = NamedParams::from_var_store(&a.vs, &a.net.prunable()).unwrap();
    let mut snap = SnapshotAt {
        at: k,
        params: &pa,
        taken: None,
    };
    train_phase(
        &a,
        &data.train,
        None,
        &recipe(20),
        PhaseStart::fresh(1),
        &mut snap,
        |_| {},
    )
    .unwrap();
    let b = model(8);
    let pb = NamedParams::from_var_store(&b.vs, &b.net.prunable()).unwrap();
    train_phase(
        &b,
        &data.train,
        None,
        &recipe(k),
        PhaseStart::fresh(1),
        &mut NoHook,
        |_| {},
    )
    .unwrap();
    let taken = snap.taken.unwrap();
    for ((_, x), (_, y)) in taken.iter().zip(pb.iter()) {
        assert!(x.equal(y));
    }
}

/// One configuration of every method (and criterion that needs its own code path) with
/// the density it ends at.
fn every_method() -> Vec<(Method, f64)> {
    vec![
        (
            Method::Imp(ImpConfig {
                rounds: 2,
                rate: 0.5,
                criterion: Criterion::Magnitude,
                allocation: Allocation::Global,
                rewind_iteration: 4,
            }),
            0.25,
        ),
        (
            Method::Lrr(LrrConfig {
                rounds: 2,
                rate: 0.5,
                criterion: Criterion::Lamp,
                allocation: Allocation::Global,
            }),
            0.25,
        ),
        (
            Method::OneShot(OneShotConfig {
                density: 0.1,
                criterion: Criterion::Snip,
                at_init: true,
                fine_tune_iterations: None,
                allocation: Allocation::Global,
                synflow_iterations: 5,
                snip_batches: 2,
            }),
            0.1,
        ),
        (
            Method::OneShot(OneShotConfig {
                density: 0.1,
                criterion: Criterion::Synflow,
                at_init: true,
                fine_tune_iterations: None,
                allocation: Allocation::Global,
                synflow_iterations: 5,
                snip_batches: 1,
            }),
            0.1,
        ),
        (
            Method::OneShot(OneShotConfig {
                density: 0.2,
                criterion: Criterion::Magnitude,
                at_init: false,
                fine_tune_iterations: Some(5),
                allocation: Allocation::Global,
                synflow_iterations: 5,
                snip_batches: 1,
            }),
            0.2,
        ),
        (
            Method::Gmp(GmpConfig {
                final_density: 0.1,
                begin: 2,
                end: 18,
                every: 4,
                allocation: Allocation::Global,
            }),
            0.1,
        ),
        (
            Method::Granet(GranetConfig {
                final_density: 0.1,
                initial_density: 1.0,
                begin: 2,
                end: 18,
                every: 4,
                drop_fraction: 0.5,
                allocation: Allocation::Global,
            }),
            0.1,
        ),
        (
            Method::Rigl(RiglConfig {
                density: 0.1,
                every: 5,
                drop_fraction: 0.3,
                end_fraction: 0.75,
                dense_layers: vec![],
                dense_in_budget: false,
            }),
            0.1,
        ),
    ]
}

/// Every method runs with and without AP, reaches its target density exactly, and
/// records its events.
#[test]
fn every_method_reaches_its_density() {
    let _g = torch_lock();
    for (method, density) in every_method() {
        for ap in [None, Some(ApConfig::with_rate(0.05))] {
            let (records, masks) = run(&method, ap.as_ref(), 20);
            let last = records.last().unwrap();
            let total = last.density.total as f64;
            let want = (density * total).round();
            assert!(
                (last.density.kept as f64 - want).abs() <= 1.0,
                "{}: kept {} want {want}; events {:?}",
                method.name(),
                last.density.kept,
                records.iter().map(|r| &r.events).collect::<Vec<_>>()
            );
            assert!(
                records.iter().map(|r| r.events.len()).sum::<usize>() >= 1,
                "{} records its events",
                method.name()
            );
            if ap.is_some() && !matches!(method, Method::Rigl(_)) {
                assert!(
                    records
                        .iter()
                        .flat_map(|r| &r.events)
                        .any(|e| e.ap_removed > 0),
                    "{} + AP removes some weights",
                    method.name()
                );
            }
            if !matches!(method, Method::Granet(_) | Method::Rigl(_)) {
                for w in masks.windows(2) {
                    assert!(
                        w[1].is_subset_of(&w[0]),
                        "{}: pruning-only masks shrink",
                        method.name()
                    );
                }
            }
        }
    }
}

#[test]
fn invalid_settings_name_the_field() {
    let _g = torch_lock();
    let t = recipe(10);
    let e = Method::Gmp(GmpConfig {
        final_density: 0.1,
        begin: 5,
        end: 50,
        every: 1,
        allocation: Allocation::Global,
    })
    .validate(&t, None)
    .unwrap_err();
    assert!(e.to_string().contains("prune.end"), "{e}");
    let e = Method::Imp(ImpConfig {
        rounds: 1,
        rate: 0.2,
        criterion: Criterion::Magnitude,
        allocation: Allocation::Global,
        rewind_iteration: 10,
    })
    .validate(&t, None)
    .unwrap_err();
    assert!(e.to_string().contains("rewind_iteration"), "{e}");
    assert!(validate_rates(1.2, None)
        .unwrap_err()
        .to_string()
        .contains("prune.rate"));
    assert!(validate_rates(0.2, Some(&ApConfig::with_rate(0.3)))
        .unwrap_err()
        .to_string()
        .contains("ap.rate"));
}

/// Runs `method` with a fresh model, stopping after `stop_after` rounds and continuing in
/// a second model (initialised differently, so only the checkpoint can make it agree) from
/// deep copies of the checkpoint: the records must equal an uninterrupted run's.
fn resumed_equals_uninterrupted(
    arch: &str,
    method: &Method,
    ap: Option<&ApConfig>,
    stop_after: usize,
) {
    let data = toy_for(arch, 64, 1);
    let cfg = recipe(12);
    let whole = run_arch(arch, method, ap, 12).0;
    let m = model_of(arch, 2);
    type Saved = (Vec<RoundRecord>, Vec<(String, Tensor)>);
    let mut saved: Option<Saved> = None;
    let mut seen = vec![];
    let err = run_method_from(
        &setup(&m, &data, &cfg, method, ap),
        None,
        |r, _, ckpt| {
            seen.push(r.clone());
            if seen.len() == stop_after {
                let deep = ckpt
                    .tensors
                    .iter()
                    .map(|(n, t)| (n.clone(), t.copy()))
                    .collect();
                saved = Some((seen.clone(), deep));
                return Err(PruneError::OnRound("interrupted".into()));
            }
            Ok(())
        },
        |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("interrupted"));
    let (records, tensors) = saved.expect("stopped after a round");
    let other = model_of(arch, 77);
    let resumed = run_method_from(
        &setup(&other, &data, &cfg, method, ap),
        Some(Resume {
            records,
            checkpoint: Checkpoint { tensors },
        }),
        |_, _, _| Ok(()),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(resumed.len(), whole.len());
    for (a, b) in resumed.iter().zip(&whole) {
        let strip = |r: &RoundRecord| RoundRecord {
            seconds: 0.0,
            ..r.clone()
        };
        assert_eq!(strip(a), strip(b), "round {}", a.round);
    }
}

#[test]
fn imp_with_ap_resumes_exactly() {
    let _g = torch_lock();
    let imp = Method::Imp(ImpConfig {
        rounds: 3,
        rate: 0.3,
        criterion: Criterion::Magnitude,
        allocation: Allocation::Global,
        rewind_iteration: 4,
    });
    resumed_equals_uninterrupted("lenet300-100", &imp, Some(&ApConfig::with_rate(0.05)), 1);
    resumed_equals_uninterrupted("lenet300-100", &imp, Some(&ApConfig::with_rate(0.05)), 3);
}

#[test]
fn lrr_and_one_shot_resume_exactly() {
    let _g = torch_lock();
    let lrr = Method::Lrr(LrrConfig {
        rounds: 2,
        rate: 0.4,
        criterion: Criterion::Random,
        allocation: Allocation::Global,
    });
    resumed_equals_uninterrupted("lenet300-100", &lrr, None, 2);
    let one_shot = Method::OneShot(OneShotConfig {
        density: 0.2,
        criterion: Criterion::Magnitude,
        at_init: false,
        fine_tune_iterations: None,
        allocation: Allocation::Global,
        synflow_iterations: 1,
        snip_batches: 1,
    });
    resumed_equals_uninterrupted(
        "lenet300-100",
        &one_shot,
        Some(&ApConfig::with_rate(0.05)),
        1,
    );
}

/// AP's budget in an event a schedule sets, derived by hand from the documented rule
/// min(floor(share · n), floor(survivor_share · (S − n))): a one-shot event to 5% of
/// 10,000 weights removes n = 9,500, and AP takes floor(0.025 · 500) = 12 — not
/// floor(0.1 · 9,500) = 950; a 20% event gives the released code's 2% of S.
#[test]
fn ap_budget_of_schedule_set_events() {
    let ap = ApConfig::with_rate(0.02);
    assert_eq!(Budget::from_count(9_500, 10_000, Some(&ap), 0).n_ap, 12);
    assert_eq!(Budget::from_count(2_000, 10_000, Some(&ap), 0).n_ap, 200);
    assert_eq!(Budget::from_count(100, 10_000, Some(&ap), 0).n_ap, 10);
    assert_eq!(Budget::from_count(100, 10_000, None, 0).n_ap, 0);
    let late = ApConfig {
        from_event: 1,
        ..ap.clone()
    };
    assert_eq!(Budget::from_count(2_000, 10_000, Some(&late), 0).n_ap, 0);
    assert_eq!(Budget::from_count(2_000, 10_000, Some(&late), 1).n_ap, 200);
}

/// One-shot + AP to 5% density of LeNet-300-100 (235,200 + 30,000 + 1,000 weights):
/// AP removes exactly floor(0.025 · kept after) — a small fraction of the kept negative
/// weights — and both variants end at the same per-layer counts.
#[test]
fn one_shot_ap_takes_the_release_proportion_of_survivors() {
    let _g = torch_lock();
    let m = model_for_mnist(11);
    let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
    let theta0 = params.snapshot();
    // "Training": move every weight a little, so movement differs from magnitude.
    tch::no_grad(|| {
        for w in params.tensors() {
            let _ = w.shallow_clone().g_add_(&(Tensor::randn_like(w) * 0.01));
        }
    });
    let host = HostCriterion {
        input_shape: &[1, 28, 28],
        ..host_of(&m)
    };
    let total = Mask::dense(&params).kept();
    let n = total - (0.05 * total as f64).round() as i64;
    let ap = ApConfig::with_rate(0.02);
    let mut counts = vec![];
    for with_ap in [false, true] {
        let mut mask = Mask::dense(&params);
        let a = with_ap.then_some(&ap);
        let e = pruning_event(
            &params.snapshot(),
            &mut mask,
            &theta0,
            &HostCriterion {
                criterion: Criterion::Magnitude,
                allocation: &Allocation::Global,
                ..host
            },
            a,
            EventAt {
                budget: Budget::from_count(n, total, a, 0),
                index: 0,
                iteration: None,
            },
        )
        .unwrap();
        let survivors = total - n;
        if with_ap {
            assert_eq!(e.ap_removed, (0.025 * survivors as f64).floor() as i64);
            assert_eq!(e.ap_shortfall, 0);
            assert!(
                e.ap_removed * 10 < survivors / 2,
                "far fewer than the kept negatives"
            );
        }
        assert_eq!(e.host_removed + e.ap_removed, n);
        assert_eq!(mask.kept(), survivors);
        counts.push(mask.report().kept);
    }
    assert_eq!(counts[0], counts[1]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// X and X+AP remove the same number in all (global allocation) or from every layer
    /// (layer-wise allocations); the reported host and AP counts add up to what left the
    /// mask.
    #[test]
    fn ap_keeps_the_allocation(seed in 0i64..1000, rate in 0.05f64..0.6, ap_frac in 0.0f64..1.0, alloc_kind in 0usize..3, pre in 0.0f64..0.7) {
        let _g = torch_lock();
        let m = model(seed);
        let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
        let theta0 = params.snapshot();
        tch::no_grad(|| {
            for w in params.tensors() {
                let _ = w.shallow_clone().g_add_(&(Tensor::randn_like(w) * 0.05));
            }
        });
        let mut start = Mask::dense(&params);
        start.remove(&params.tensors().iter().map(|t| Tensor::rand_like(t).lt(pre)).collect::<Vec<_>>()).unwrap();
        let alloc = match alloc_kind {
            0 => Allocation::Global,
            1 => Allocation::Uniform,
            _ => Allocation::PerLayer { overrides: [("fc3.weight".to_string(), 0.5)].into() },
        };
        let host = host_of(&m);
        let ap = ApConfig::with_rate(rate * ap_frac * 0.99);
        let mut per_layer = vec![];
        for with_ap in [false, true] {
            let mut mask = start.copy();
            let a = with_ap.then_some(&ap);
            let s = mask.kept();
            let budget = Budget::from_rates(s, rate, a, 0);
            let e = pruning_event(&params.snapshot(), &mut mask, &theta0, &HostCriterion { criterion: Criterion::Magnitude, allocation: &alloc, ..host }, a, EventAt { budget, index: 0, iteration: None }).unwrap();
            // The release's budget, computed here: n = floor(p·S), n_AP = floor(p_AP·S).
            let n = (rate * s as f64).floor() as i64;
            let n_ap = if with_ap { (ap.rate * s as f64).floor() as i64 } else { 0 };
            prop_assert_eq!(e.host_removed + e.ap_removed, s - mask.kept());
            prop_assert!(e.ap_removed <= n_ap);
            // AP's budget: n_AP in all, or per layer floor(n_AP/S · multiplier · S_l).
            let ap_budget: i64 = if alloc == Allocation::Global {
                n_ap
            } else {
                start.report().layers.iter().map(|l| {
                    let m = if alloc_kind == 2 && l.name == "fc3.weight" { 0.5 } else { 1.0 };
                    ((n_ap as f64 / s as f64 * m).min(1.0) * l.kept as f64).floor() as i64
                }).sum()
            };
            prop_assert_eq!(e.ap_removed + e.ap_shortfall, ap_budget);
            if alloc == Allocation::Global {
                prop_assert_eq!(s - mask.kept(), n);
            }
            per_layer.push(mask.report().layers.iter().map(|l| l.kept).collect::<Vec<_>>());
        }
        if alloc == Allocation::Global {
            prop_assert_eq!(per_layer[0].iter().sum::<i64>(), per_layer[1].iter().sum::<i64>());
        } else {
            prop_assert_eq!(&per_layer[0], &per_layer[1]);
        }
    }
}

/// Probes the optimizer right after every GraNet event: a connection grown at this event
/// (kept, value exactly 0) has zero Adam state — also one the GMP step pruned and
/// drop-and-grow regrew in the same event (its state was stale before the fix).
#[test]
fn granet_grown_connections_start_with_zero_state() {
    struct Probe<'a> {
        inner: Gradual<'a>,
        worst: f64,
    }
    impl StepHook for Probe<'_> {
        fn after_backward(&mut self, it: u64, opt: &mut Optimizer) -> Result<(), TrainError> {
            self.inner.after_backward(it, opt)?;
            self.worst = self.worst.max(opt.state_at_kept_zeros());
            Ok(())
        }
    }
    let _g = torch_lock();
    let data = toy(64, 9);
    let m = model(10);
    let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
    let mask = Mask::dense(&params);
    let shared = mask.shallow_clone();
    let host = host_of(&m);
    let schedule = Scripted {
        prune: Some((2, 30, 2, 0.0, 0.9)),
        regrow: Some(ScriptedRegrow {
            begin: 2,
            every: 2,
            stop: u64::MAX,
            initial: 0.5,
            decay_until: 40,
            rounding: DropRounding::Ceil,
            dense_layers: vec![],
        }),
    };
    let mut probe = Probe {
        inner: Gradual::new(&params, mask.shallow_clone(), None, host, &schedule, 40),
        worst: 0.0,
    };
    let adam = TrainConfig {
        optimizer: OptimizerSpec::Adam {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        ..recipe(40)
    };
    train_phase(
        &m,
        &data.train,
        Some(&shared),
        &adam,
        PhaseStart::fresh(1),
        &mut probe,
        |_| {},
    )
    .unwrap();
    assert!(probe.inner.finish(Ok(())).unwrap().0.len() > 10);
    assert_eq!(probe.worst, 0.0, "a grown connection kept optimizer state");
}

/// AP acts only inside its window of events [from_event, until_event): IMP's events 0 and
/// 3 are the host's alone, events 1 and 2 give AP exactly floor(p_AP·S) (computed here);
/// the same window holds for a schedule-set method (GMP).
#[test]
fn ap_acts_only_inside_its_window() {
    let _g = torch_lock();
    let window = |from, until| ApConfig {
        from_event: from,
        until_event: until,
        ..ApConfig::with_rate(0.05)
    };
    let ap = window(1, Some(3));
    assert!(!ap.active(0) && ap.active(1) && ap.active(2) && !ap.active(3));
    assert!(window(2, None).active(1000) && !window(2, None).active(1));
    let imp = Method::Imp(ImpConfig {
        rounds: 4,
        rate: 0.3,
        criterion: Criterion::Magnitude,
        allocation: Allocation::Global,
        rewind_iteration: 0,
    });
    let (records, _) = run(&imp, Some(&ap), 8);
    let events: Vec<&EventReport> = records.iter().flat_map(|r| &r.events).collect();
    assert_eq!(events.len(), 4);
    for e in events {
        let inside = (1..3).contains(&e.index);
        let n_ap = if inside {
            (0.05 * e.surviving as f64).floor() as i64
        } else {
            0
        };
        assert_eq!(e.ap_removed + e.ap_shortfall, n_ap, "event {}", e.index);
        assert_eq!(inside, e.ap_removed > 0, "event {}", e.index);
        assert_eq!(
            e.host_removed + e.ap_removed,
            (0.3 * e.surviving as f64).floor() as i64
        );
    }
    let gmp = Method::Gmp(GmpConfig {
        final_density: 0.1,
        begin: 2,
        end: 18,
        every: 4,
        allocation: Allocation::Global,
    });
    let (records, _) = run(&gmp, Some(&window(2, Some(4))), 20);
    let events = &records[0].events;
    assert_eq!(events.len(), 5, "events at 2, 6, 10, 14, 18");
    for e in events {
        assert_eq!(
            (2..4).contains(&e.index),
            e.ap_removed > 0,
            "event {}",
            e.index
        );
    }
}

/// A layer with no negative weights leaves AP's per-layer budget unmet: the shortfall is
/// made up by the host in that layer, the counts add up, and X and X+AP keep the same
/// number in every layer. Every expected mask is worked out by hand in the comments.
#[test]
fn per_layer_shortfall_is_made_up_in_its_layer() {
    let _g = torch_lock();
    let m = model(0);
    let host = host_of(&m);
    // l0: 0.1 … 1.0, all positive. l1: alternating signs, |w| falling.
    let l0: Vec<f32> = (1..=10).map(|i| i as f32 / 10.0).collect();
    let l1: Vec<f32> = vec![-0.9, 0.8, -0.7, 0.6, -0.5, 0.4, -0.3, 0.2, -0.1, 0.05];
    // Movement since w_0 of l1's negatives: idx 0: 0.3, 2: 0.01, 4: 0.2, 6: 0.05.
    let moved: Vec<f32> = vec![0.3, 0.0, 0.01, 0.0, 0.2, 0.0, 0.05, 0.0, 0.0, 0.0];
    let w0_l1: Vec<f32> = l1.iter().zip(&moved).map(|(w, d)| w + d).collect();
    let params = || {
        NamedParams::from_entries(vec![
            ("l0.weight".into(), Tensor::from_slice(&l0)),
            ("l1.weight".into(), Tensor::from_slice(&l1)),
        ])
    };
    let w0 = NamedParams::from_entries(vec![
        ("l0.weight".into(), Tensor::from_slice(&l0)),
        ("l1.weight".into(), Tensor::from_slice(&w0_l1)),
    ]);
    let ap = ApConfig::with_rate(0.2);
    // S = 20, p = 0.5: n = 10, n_AP = 4; uniform: 5 per layer, AP's 2 per layer.
    let kept_after = |with_ap: bool| {
        let p = params();
        let mut mask = Mask::dense(&p);
        let a = with_ap.then_some(&ap);
        let budget = Budget::from_rates(20, 0.5, a, 0);
        assert_eq!((budget.n, budget.n_ap), (10, if with_ap { 4 } else { 0 }));
        let e = pruning_event(
            &p,
            &mut mask,
            &w0,
            &HostCriterion {
                criterion: Criterion::Magnitude,
                allocation: &Allocation::Uniform,
                ..host
            },
            a,
            EventAt {
                budget,
                index: 0,
                iteration: None,
            },
        )
        .unwrap();
        let kept: Vec<Vec<f32>> = mask.tensors().iter().map(|t| values(t)).collect();
        (e, kept)
    };
    let one = |idx: &[usize]| {
        let mut v = vec![0.0f32; 10];
        for &i in idx {
            v[i] = 1.0;
        }
        v
    };
    // Without AP: each layer drops its 5 smallest |w| (l1: 0.05, −0.1, 0.2, −0.3, 0.4).
    let (e, kept) = kept_after(false);
    assert_eq!((e.host_removed, e.ap_removed, e.ap_shortfall), (10, 0, 0));
    assert_eq!(kept, vec![one(&[5, 6, 7, 8, 9]), one(&[0, 1, 2, 3, 4])]);
    // With AP: the host drops 3 per layer (l0: 0.1–0.3; l1: 0.05, −0.1, 0.2); AP finds no
    // negative in l0 (shortfall 2, made up by the host there: 0.4, 0.5) and drops l1's two
    // least-moved negatives (idx 2 and 6).
    let (e, kept) = kept_after(true);
    assert_eq!((e.host_removed, e.ap_removed, e.ap_shortfall), (8, 2, 2));
    assert_eq!(kept, vec![one(&[5, 6, 7, 8, 9]), one(&[0, 1, 3, 4, 5])]);
}

/// The step hook hands back what stopped training: its own event error first, then a
/// divergence of the training loop; otherwise its events (mutation testing,
/// docs/testing.md).
#[test]
fn gradual_hook_reports_its_error_and_divergence() {
    let _g = torch_lock();
    let m = model(0);
    let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
    let rigl = rigl_script(5, 30, 0.3, 40, DropRounding::Floor);
    let diverged = TrainError::Diverged {
        iteration: 7,
        loss: f64::INFINITY,
    };
    // No event ran: a divergence is an error, no error is the (empty) event list.
    let mask = Mask::dense(&params);
    let hook = Gradual::new(&params, mask, None, host_of(&m), &rigl, 40);
    match hook.finish::<()>(Err(diverged)) {
        Err(PruneError::Train(TrainError::Diverged { iteration: 7, loss })) => {
            assert_eq!(loss, f64::INFINITY)
        }
        other => panic!("expected the divergence, got {other:?}"),
    }
    let mask = Mask::dense(&params);
    let hook = Gradual::new(&params, mask, None, host_of(&m), &rigl, 40);
    assert_eq!(hook.finish(Ok(())).unwrap().0, vec![]);
    // A mask of one layer for three parameters: the drop-and-grow event at step 5 fails,
    // the hook fails the step, and `finish` returns the event's error, not the loop's.
    let mask = Mask::from_entries(vec![(
        "fc1.weight".into(),
        Mask::dense(&params).get("fc1.weight").unwrap().copy(),
    )]);
    let mut opt = plain_sgd(&m.vs, Some(&mask));
    let mut hook = Gradual::new(&params, mask, None, host_of(&m), &rigl, 40);
    hook.after_backward(4, &mut opt).unwrap(); // not an event step
    let step_error = hook.after_backward(5, &mut opt).unwrap_err();
    assert!(
        matches!(&step_error, TrainError::Hook(e) if e.to_string().contains("iteration 5")),
        "{step_error:?}"
    );
    match hook.finish::<()>(Err(step_error)) {
        Err(PruneError::DuringTraining { iteration: 5, .. }) => {}
        Err(e) => panic!("the event's error, typed, not {e:?}"),
        Ok(events) => panic!("the event error was dropped: {events:?}"),
    }
}

/// GraNet's schedule: pruning at begin, begin + every, … up to `end`, drop-and-grow at
/// every such step from `begin` until training ends, nothing in between (mutation
/// testing, docs/testing.md). begin = 3, every = 4, end = 11, steps 0 … 20: events at 3,
/// 7, 11 (prune + drop-and-grow), then 15 and 19 (drop-and-grow only).
#[test]
fn granet_hook_drops_and_grows_at_the_schedule_steps() {
    let _g = torch_lock();
    let m = model(0);
    let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
    let mask = Mask::dense(&params);
    let mut opt = plain_sgd(&m.vs, Some(&mask));
    let granet = GranetConfig {
        final_density: 0.5,
        initial_density: 1.0,
        begin: 3,
        end: 11,
        every: 4,
        drop_fraction: 0.3,
        allocation: Allocation::Global,
    };
    let mut hook = Gradual::new(
        &params,
        mask.shallow_clone(),
        None,
        host_of(&m),
        &granet,
        100,
    );
    for it in 0..=20 {
        hook.after_backward(it, &mut opt).unwrap();
    }
    let (events, ()) = hook.finish(Ok(())).unwrap();
    let at: Vec<Option<u64>> = events.iter().map(|e| e.iteration).collect();
    assert_eq!(at, [3, 7, 11, 15, 19].map(Some).to_vec());
    for e in &events {
        assert!(e.dropped > 0 && e.regrown == e.dropped, "{e:?}");
    }
}

/// AP takes part in a drop-and-grow step only with `in_drop_and_grow`, takes `share` of
/// the drop, and a shortfall there reaches the event's report (mutation testing,
/// docs/testing.md). One layer of 40 positive weights (AP finds no candidate), RigL at
/// step 5 with initial fraction 0.5 decaying to 0 at step 1000, rounded up:
/// k = ceil(0.5/2 · (1 + cos(π · 5/1000)) · 40) = ceil(19.9988) = 20; AP's share
/// floor(0.1 · 20) = 2.
#[test]
fn rigl_step_reports_ap_share_and_shortfall() {
    let _g = torch_lock();
    let m = model(0);
    let w: Vec<f32> = (1..=40).map(|i| i as f32 / 40.0).collect();
    let run = |in_drop_and_grow: bool| {
        let params = NamedParams::from_entries(vec![("l0.weight".into(), Tensor::from_slice(&w))]);
        let mask = Mask::dense(&params);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let mut opt = plain_sgd(&vs, None);
        let ap = ApConfig {
            in_drop_and_grow,
            ..ApConfig::with_rate(0.2)
        };
        let schedule = rigl_script(5, 30, 0.5, 1000, DropRounding::Ceil);
        let mut hook = Gradual::new(
            &params,
            mask.shallow_clone(),
            Some(&ap),
            host_of(&m),
            &schedule,
            40,
        );
        for it in 0..=5 {
            hook.after_backward(it, &mut opt).unwrap();
        }
        let (events, ()) = hook.finish(Ok(())).unwrap();
        assert_eq!(events.len(), 1);
        let e = events[0];
        (
            e.iteration,
            e.dropped,
            e.ap_dropped,
            e.ap_shortfall,
            e.regrown,
        )
    };
    // Without AP in drop-and-grow: the host drops all 20 (and 20 are regrown).
    assert_eq!(run(false), (Some(5), 20, 0, 0, 20));
    // With it: the host drops 18, AP's 2 find no negative weight: a shortfall of 2.
    assert_eq!(run(true), (Some(5), 18, 0, 2, 18));
}

/// Drop-and-grow by hand (mutation testing, docs/testing.md): the smallest active |w| are
/// dropped, the inactive positions with the largest |gradient| grown.
#[test]
fn drop_and_grow_regrows_the_largest_gradients() {
    // active: 1 (0.5), 2 (0.1), 3 (0.4), 5 (0.3); inactive: 0, 4
    let params = params_with_grads(
        &[vec![0.0, 0.5, 0.1, 0.4, 0.0, 0.3]],
        &[vec![0.2, 0.0, 0.7, 0.0, -0.9, 0.05]],
    );
    let mut mask = Mask::from_entries(vec![(
        "l0.weight".into(),
        Tensor::from_slice(&[0.0f32, 1.0, 1.0, 1.0, 0.0, 1.0]),
    )]);
    let spec = DropGrow {
        fraction: 0.5,
        rounding: DropRounding::Floor,
        dense_layers: &[],
    };
    let r = drop_and_grow(&params, &mut mask, &params.snapshot(), &spec, None).unwrap();
    // k = floor(0.5 · 4) = 2: drop 2 (0.1) and 5 (0.3). Inactive then: 0 (|g| 0.2),
    // 2 (0.7), 4 (0.9), 5 (0.05): grow 4 and 2. 2 keeps its value, 4 is new (at 0), 5 is 0.
    assert_eq!(
        values(mask.tensors()[0]),
        vec![0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    );
    assert_eq!(
        values(params.tensors()[0]),
        vec![0.0, 0.5, 0.1, 0.4, 0.0, 0.0]
    );
    assert_eq!(
        (r.host_dropped, r.ap_dropped, r.regrown, r.new_connections),
        (2, 0, 2, 1)
    );
}

/// A `tracing` writer into a shared buffer, to read what a test logged.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

/// Runs `f` with this thread's warnings (and worse) written to a buffer; returns them.
fn warnings_of(f: impl FnOnce()) -> String {
    let buf = LogBuf::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(sub, f);
    let out = buf.0.lock().unwrap().clone();
    String::from_utf8(out).unwrap()
}

/// With a global allocation, AP's shortfall is made up by the host too, so the event
/// still removes exactly n, and a shortfall (only a shortfall) is warned about (mutation
/// testing, docs/testing.md). Worked out by hand.
#[test]
fn global_shortfall_is_made_up_by_the_host() {
    let _g = torch_lock();
    let m = model(0);
    let host = host_of(&m);
    // l0: 0.1 … 1.0, all positive. l1: alternating signs, |w| falling.
    let l0: Vec<f32> = (1..=10).map(|i| i as f32 / 10.0).collect();
    let l1: Vec<f32> = vec![-0.9, 0.8, -0.7, 0.6, -0.5, 0.4, -0.3, 0.2, -0.1, 0.05];
    let event = |ap_rate: f64| {
        let params = NamedParams::from_entries(vec![
            ("l0.weight".into(), Tensor::from_slice(&l0)),
            ("l1.weight".into(), Tensor::from_slice(&l1)),
        ]);
        let w0 = params.snapshot();
        let mut mask = Mask::dense(&params);
        let ap = ApConfig::with_rate(ap_rate);
        let budget = Budget::from_rates(20, 0.5, Some(&ap), 0);
        let mut e = None;
        let warned = warnings_of(|| {
            e = Some(
                pruning_event(
                    &params,
                    &mut mask,
                    &w0,
                    &HostCriterion {
                        criterion: Criterion::Magnitude,
                        allocation: &Allocation::Global,
                        ..host
                    },
                    Some(&ap),
                    EventAt {
                        budget,
                        index: 0,
                        iteration: None,
                    },
                )
                .unwrap(),
            )
        });
        assert!(zero_where_pruned(&params, &mask));
        let kept: Vec<Vec<f32>> = mask.tensors().iter().map(|t| values(t)).collect();
        ((budget.n, budget.n_ap), e.unwrap(), kept, warned)
    };
    // Both cases keep l0[3..] (0.4 … 1.0) and l1's 0.8, 0.6, 0.4 (indices 1, 3, 5).
    let l0_kept: Vec<f32> = (0..10).map(|i| if i >= 3 { 1.0 } else { 0.0 }).collect();
    let l1_kept: Vec<f32> = (0..10)
        .map(|i| if [1, 3, 5].contains(&i) { 1.0 } else { 0.0 })
        .collect();
    let warning = "AP found fewer kept negative weights than its budget";

    // S = 20, p = 0.5, p_AP = 0.3: n = 10, n_AP = 6. The host first removes n − n_AP = 4
    // smallest |w| (ties by position, l0 first): l1[9] 0.05, l0[0] 0.1, l1[8] 0.1, l0[1]
    // 0.2. AP's candidates are l1's kept negatives 0, 2, 4, 6: it removes all 4, a
    // shortfall of 2, which the host makes up with the next smallest kept |w|: l1[7] 0.2,
    // l0[2] 0.3.
    let (budget, e, kept, warned) = event(0.3);
    assert_eq!(budget, (10, 6));
    assert_eq!(
        (e.surviving, e.host_removed, e.ap_removed, e.ap_shortfall),
        (20, 6, 4, 2)
    );
    assert_eq!(kept, vec![l0_kept.clone(), l1_kept.clone()]);
    assert_eq!(warned.matches(warning).count(), 1, "{warned}");

    // p_AP = 0.2: n_AP = 4. The host removes 6 (the four above, then l1[7] 0.2 and l0[2]
    // 0.3, before the tied l1[6] 0.3); AP removes its 4 candidates: no shortfall, no warning.
    let (budget, e, kept, warned) = event(0.2);
    assert_eq!(budget, (10, 4));
    assert_eq!(
        (e.surviving, e.host_removed, e.ap_removed, e.ap_shortfall),
        (20, 6, 4, 0)
    );
    assert_eq!(kept, vec![l0_kept, l1_kept]);
    assert_eq!(warned.matches(warning).count(), 0, "{warned}");
}

/// SynFlow prunes globally (its scores are recomputed over the whole network), whatever
/// allocation `pruning_event` is handed: a layer-wise one neither errors nor changes the
/// mask, and exactly n weights go (mutation testing, docs/testing.md).
#[test]
fn synflow_event_ignores_a_layer_wise_allocation() {
    let _g = torch_lock();
    let masks: Vec<Vec<Vec<f32>>> = [Allocation::Global, Allocation::Uniform]
        .iter()
        .map(|alloc| {
            let m = model(0);
            let host = host_of(&m);
            let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
            let mut mask = Mask::dense(&params);
            let total = mask.kept();
            // LeNet-300-100 on 1×2×2 inputs: 4·300 + 300·100 + 100·2 prunable weights
            assert_eq!(total, 31_400);
            let n = 15_700;
            let budget = Budget { n, n_ap: 0 };
            let e = pruning_event(
                &params,
                &mut mask,
                &params.snapshot(),
                &HostCriterion {
                    criterion: Criterion::Synflow,
                    allocation: alloc,
                    ..host
                },
                None,
                EventAt {
                    budget,
                    index: 0,
                    iteration: None,
                },
            )
            .unwrap();
            assert_eq!((e.host_removed, e.ap_removed), (n, 0));
            assert_eq!(mask.kept(), total - n);
            mask.tensors().iter().map(|t| values(t)).collect()
        })
        .collect();
    assert!(
        masks[0] == masks[1],
        "the allocation changed SynFlow's mask"
    );
}

/// θ_k holds the BatchNorm buffers too: IMP's rewind point in the round-0 checkpoint
/// equals, variable for variable (running mean and variance included), a model trained
/// for exactly k steps — so a rewind resets the buffers with the weights.
#[test]
fn theta_k_includes_batchnorm_buffers() {
    let _g = torch_lock();
    tch::set_num_threads(1);
    let k = 5;
    let data = toy_for("resnet20", 64, 1);
    let imp = Method::Imp(ImpConfig {
        rounds: 1,
        rate: 0.3,
        criterion: Criterion::Magnitude,
        allocation: Allocation::Global,
        rewind_iteration: k,
    });
    let m = model_of("resnet20", 2);
    let mut rewind: Vec<(String, Tensor)> = vec![];
    let cfg = recipe(12);
    run_method_from(
        &setup(&m, &data, &cfg, &imp, None),
        None,
        |r, _, ckpt| {
            if r.round == 0 {
                rewind = ckpt
                    .tensors
                    .iter()
                    .filter_map(|(n, t)| Some((n.strip_prefix("rewind/")?.to_string(), t.copy())))
                    .collect();
            }
            Ok(())
        },
        |_, _| {},
    )
    .unwrap();
    let b = model_of("resnet20", 2);
    train_phase(
        &b,
        &data.train,
        None,
        &recipe(k),
        PhaseStart::fresh(3),
        &mut NoHook,
        |_| {},
    )
    .unwrap();
    let vars = b.vs.variables();
    let buffers: Vec<&String> = vars.keys().filter(|n| n.contains("running_")).collect();
    assert!(buffers.len() >= 2, "resnet20 has BatchNorm buffers");
    assert_eq!(rewind.len(), vars.len(), "θ_k holds every variable");
    for (name, t) in &rewind {
        assert!(
            t.equal(&vars[name]),
            "{name} differs from the k-step model's"
        );
    }
    let init = model_of("resnet20", 2).vs.variables();
    assert!(
        buffers.iter().any(|n| !init[*n].equal(&vars[*n])),
        "k steps move the running statistics (else this test proves nothing)"
    );
}

/// A resumed IMP run of a BatchNorm network equals the uninterrupted one: the checkpoint
/// restores the running statistics (evaluation uses them) as well as the weights.
#[test]
fn batchnorm_model_resumes_exactly() {
    let _g = torch_lock();
    tch::set_num_threads(1);
    let imp = Method::Imp(ImpConfig {
        rounds: 2,
        rate: 0.3,
        criterion: Criterion::Magnitude,
        allocation: Allocation::Global,
        rewind_iteration: 4,
    });
    resumed_equals_uninterrupted("resnet20", &imp, Some(&ApConfig::with_rate(0.05)), 1);
}

/// A method whose events would empty a layer is refused before any training, naming the
/// round (`reach`): the library path checks what a spec's validation checks.
#[test]
fn a_run_that_would_empty_a_layer_is_refused_before_training() {
    let _g = torch_lock();
    let data = toy(64, 1);
    let m = model(2);
    let cfg = recipe(4);
    let imp = Method::Imp(ImpConfig {
        rounds: 20,
        rate: 0.9,
        criterion: Criterion::Magnitude,
        allocation: Allocation::Global,
        rewind_iteration: 0,
    });
    let mut rounds = 0;
    let err = run_method(
        &setup(&m, &data, &cfg, &imp, None),
        |_, _| {
            rounds += 1;
            Ok(())
        },
        |_, _| {},
    )
    .unwrap_err();
    match err {
        PruneError::Setting(f) => {
            assert_eq!(f.field, "prune.rounds");
            assert!(f.problem.contains("after round"), "{f}");
        }
        other => panic!("expected the setting error, got {other}"),
    }
    assert_eq!(rounds, 0, "nothing was trained");
}
