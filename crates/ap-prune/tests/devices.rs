//! A pruning event with AP on every device of `ap_testkit::devices()` (the CPU, and CUDA
//! where present or required by `AP_TEST_DEVICES`), on a ResNet-20: exactly floor(0.2·S)
//! removed, AP's share included, and the same weights as on the CPU, with a global and a
//! layer-wise allocation.

use ap_criteria::{Allocation, Criterion, HostCriterion};
use ap_mask::Mask;
use ap_models::{Model, ModelKind};
use ap_prune::{pruning_event, ApConfig, Budget, EventAt, EventReport};
use ap_tensor::NamedParams;
use ap_testkit::tensors::random_selection;
use tch::{Device, Kind, Tensor};

const INPUT: [i64; 3] = [1, 8, 8];

/// A named tensor, as `NamedParams::from_entries` and `Mask::from_entries` take them.
type Entry = (String, Tensor);
type Entries = Vec<Entry>;

/// A copy of `entries` on `device` (never the same tensors: an event edits its mask).
fn on(device: Device, entries: &[Entry]) -> Entries {
    entries
        .iter()
        .map(|(n, t)| (n.clone(), t.copy().to_device(device)))
        .collect()
}

/// One event of rate 0.2 with AP at 0.02 on `device`, on a copy of `cpu` (the same bits)
/// masked by `mask`, AP's movement measured from `start`; with the number it must
/// remove: floor(0.2·S), or with a layer-wise allocation the sum of its per-layer counts.
fn event_on(
    device: Device,
    cpu: &Model,
    (start, mask): (&[Entry], &[Entry]),
    allocation: &Allocation,
) -> (Mask, EventReport, Budget, i64) {
    let mut model = ap_models::build(ModelKind::ResNet20, &INPUT, 10, device).unwrap();
    model.vs.copy(&cpu.vs).unwrap();
    let params = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
    let phase_start = NamedParams::from_entries(on(device, start));
    let mut mask = Mask::from_entries(on(device, mask));
    mask.apply(&params).unwrap();
    let ap = ApConfig::with_rate(0.02);
    let budget = Budget::from_rates(mask.kept(), 0.2, Some(&ap), 0);
    let host = HostCriterion {
        criterion: Criterion::Magnitude,
        allocation,
        model: &model,
        batches: &[],
        input_shape: &INPUT,
        seed: 1,
        synflow_iterations: 1,
        given_scores: None,
        pattern: None,
    };
    let removes = host
        .layer_counts(&mask, budget.n)
        .map_or(budget.n, |counts| counts.iter().sum());
    let at = EventAt {
        budget,
        index: 0,
        iteration: None,
    };
    let report = pruning_event(&params, &mut mask, &phase_start, &host, Some(&ap), at).unwrap();
    (mask, report, budget, removes)
}

#[test]
fn a_pruning_event_with_ap_on_each_device_is_exact_and_equals_the_cpus() {
    let _g = ap_testkit::torch_lock();
    tch::manual_seed(4);
    let cpu = ap_models::build(ModelKind::ResNet20, &INPUT, 10, Device::Cpu).unwrap();
    let params = NamedParams::from_var_store(&cpu.vs, &cpu.net.prunable()).unwrap();
    // w_0, then "training": a small step, so that AP ranks by movement; a quarter of the
    // weights pruned before the event.
    let start: Entries = params
        .iter()
        .map(|(n, w)| (n.to_string(), w.detach().copy()))
        .collect();
    tch::no_grad(|| {
        for w in params.tensors() {
            let _ = w.shallow_clone().g_add_(&(Tensor::randn_like(w) * 0.01));
        }
    });
    let mut pre = Mask::dense(&params);
    pre.remove(&random_selection(&params.tensors(), 0.25))
        .unwrap();
    let pre: Entries = pre.iter().map(|(n, m)| (n.to_string(), m.copy())).collect();
    for allocation in [Allocation::Global, Allocation::Uniform] {
        let (want, want_report, budget, removes) =
            event_on(Device::Cpu, &cpu, (&start, &pre), &allocation);
        assert!(budget.n_ap > 0 && budget.n > budget.n_ap, "{budget:?}");
        assert!(
            removes <= budget.n && removes > budget.n * 99 / 100,
            "{removes}"
        );
        for device in ap_testkit::devices() {
            let what = format!("{device:?}, {allocation:?}");
            let (mask, report, b, r) = event_on(device, &cpu, (&start, &pre), &allocation);
            assert_eq!((b, r), (budget, removes), "{what}: the budget");
            assert_eq!(
                report.surviving - mask.kept(),
                removes,
                "{what}: exactly floor(0.2·S), or the allocation's counts, removed"
            );
            // Layer-wise, AP's share is spread by the same allocation (floors per layer).
            let ap_share = report.ap_removed + report.ap_shortfall;
            if matches!(allocation, Allocation::Global) {
                assert_eq!(ap_share, budget.n_ap, "{what}: AP's share accounted for");
            } else {
                assert!(
                    ap_share <= budget.n_ap,
                    "{what}: AP took more than its share"
                );
            }
            assert!(report.ap_removed > 0, "{what}: AP removed nothing");
            assert_eq!(report, want_report, "{what}: the event's report");
            for ((name, m), (_, w)) in mask.iter().zip(want.iter()) {
                let m = m.to_device(Device::Cpu).to_kind(Kind::Float);
                assert!(
                    m.equal(&w.to_kind(Kind::Float)),
                    "{what}: `{name}` keeps other weights than on the CPU"
                );
            }
        }
    }
}
