//! N:M sparsity kept by every method that supports it: per event (property tests over
//! criteria, allocations and AP) and through whole runs.

use super::*;
use ap_mask::NmPattern;

/// Patterns that fit the toy LeNet's layers differently: 1:2 and 2:4 fit every layer
/// ([300, 4], [100, 300], [2, 100]); 1:3 and 2:3 only fc2 (rows of 300), so fc1 and fc3
/// must stay dense.
fn pattern_of(i: usize) -> NmPattern {
    let (n, m) = [(1, 2), (2, 4), (3, 4), (1, 4), (1, 3), (2, 3)][i];
    NmPattern::new(n, m).unwrap()
}

/// Kept weights per group of every layer the pattern fits (host vectors), None for one
/// it does not.
fn groups(p: &NmPattern, mask: &Mask) -> Vec<Option<Vec<i64>>> {
    mask.iter()
        .map(|(_, m)| {
            p.fits(&m.size()).then(|| {
                ap_tensor::to_f64_vec(&p.kept_per_group(m))
                    .iter()
                    .map(|v| *v as i64)
                    .collect()
            })
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Events at rate p, with and without AP, with a global or a uniform allocation and
    /// every score-based criterion: no group ever goes below N, layers the pattern does
    /// not fit stay dense, each mask is a subset of the one before, X and X+AP keep the
    /// same count, and the event that reaches the floor leaves exactly N in every group.
    #[test]
    fn events_keep_every_group_at_n_or_more(seed in 0i64..1000, pat in 0usize..6, crit in 0usize..3, uniform in any::<bool>(), rate in 0.1f64..0.7, ap_frac in 0.05f64..0.9) {
        let _g = torch_lock();
        let p = pattern_of(pat);
        let m = model(seed);
        let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
        let criterion = [Criterion::Magnitude, Criterion::Random, Criterion::Lamp][crit];
        let alloc = if uniform { Allocation::Uniform } else { Allocation::Global };
        let host = HostCriterion { criterion, allocation: &alloc, pattern: Some(p), ..host_of(&m) };
        let ap = ApConfig::with_rate(rate * ap_frac);
        let mut masks = [Mask::dense(&params), Mask::dense(&params)];
        let mut start = params.snapshot();
        for index in 0..40 {
            // The weights move between events, as training would move them.
            tch::no_grad(|| {
                for w in params.tensors() {
                    let _ = w.shallow_clone().g_add_(&(Tensor::randn_like(w) * 0.05));
                }
            });
            let before = [masks[0].copy(), masks[1].copy()];
            for (with_ap, mask) in masks.iter_mut().enumerate() {
                let a = (with_ap == 1).then_some(&ap);
                mask.apply(&params).unwrap();
                let budget = Budget::from_rates(mask.kept(), rate, a, index);
                let at = EventAt { budget, index, iteration: None };
                let e = pruning_event(&params.snapshot(), mask, &start, &host, a, at).unwrap();
                prop_assert!(e.ap_removed <= budget.n_ap);
                prop_assert!(mask.is_subset_of(&before[with_ap]));
                for (g, (_, t)) in groups(&p, mask).iter().zip(mask.iter()) {
                    match g {
                        Some(kept) => prop_assert!(kept.iter().all(|&k| k >= p.n), "a group below N: {kept:?}"),
                        None => prop_assert_eq!(t.sum(Kind::Int64).int64_value(&[]), t.numel() as i64),
                    }
                }
            }
            prop_assert_eq!(masks[0].kept(), masks[1].kept());
            start = params.snapshot();
            if p.capacity(&masks[0]).iter().sum::<i64>() == 0 {
                break;
            }
        }
        for mask in &masks {
            prop_assert!(p.holds_exactly(mask));
        }
    }

    /// One event to the floor from a dense mask by global magnitude is, per group, the
    /// N largest |w| (the independent per-group rule of `NmPattern::keep_top`); with AP
    /// the count is the same and AP's weights were negative.
    #[test]
    fn one_event_to_the_floor_is_top_n_per_group(seed in 0i64..1000, pat in 0usize..6, ap_frac in 0.0f64..0.5) {
        let _g = torch_lock();
        let p = pattern_of(pat);
        let m = model(seed);
        let params = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
        let host = HostCriterion { pattern: Some(p), ..host_of(&m) };
        let theta0 = params.snapshot();
        let total = params.numel();
        let mut plain = Mask::dense(&params);
        let budget = Budget::from_count(total, total, None, 0);
        pruning_event(&params.snapshot(), &mut plain, &theta0, &host, None, EventAt { budget, index: 0, iteration: None }).unwrap();
        for ((_, kept), w) in plain.iter().zip(params.tensors()) {
            prop_assert!(kept.equal(&p.keep_top(&w.abs())));
        }
        let ap = ApConfig::with_rate(ap_frac);
        let mut with_ap = Mask::dense(&params);
        tch::no_grad(|| {
            for w in params.tensors() {
                let _ = w.shallow_clone().g_add_(&(Tensor::randn_like(w) * 0.05));
            }
        });
        let now = params.snapshot();
        // The event zeroes what it prunes in `now`: keep the values to read the signs.
        let values = now.snapshot();
        let n_ap = (ap_frac * total as f64) as i64;
        let budget = Budget { n: total, n_ap };
        let e = pruning_event(&now, &mut with_ap, &theta0, &host, Some(&ap), EventAt { budget, index: 0, iteration: None }).unwrap();
        prop_assert!(p.holds_exactly(&with_ap));
        prop_assert_eq!(with_ap.kept(), plain.kept());
        prop_assert!(e.ap_removed <= n_ap);
        // AP's removals are negative weights: with AP, every removed non-negative weight
        // is one the host removed, so at most host_removed of them.
        let removed_non_negative: i64 = with_ap
            .tensors()
            .iter()
            .zip(values.tensors())
            .map(|(k, w)| k.eq_tensor(&k.zeros_like()).logical_and(&w.ge(0.0)).sum(Kind::Int64).int64_value(&[]))
            .sum();
        prop_assert!(removed_non_negative <= e.host_removed);
    }
}

/// Whole runs of each method that supports a pattern, with and without AP, end with
/// exactly N per group; the masks of round-based runs shrink round by round.
#[test]
fn methods_end_on_the_pattern() {
    let _g = torch_lock();
    let p = NmPattern::new(2, 4).unwrap();
    let methods = [
        Method::Imp(ImpConfig {
            rounds: 3,
            rate: 0.25,
            criterion: Criterion::Magnitude,
            allocation: Allocation::Global,
            rewind_iteration: 0,
        }),
        Method::Lrr(LrrConfig {
            rounds: 2,
            rate: 0.3,
            criterion: Criterion::Lamp,
            allocation: Allocation::Uniform,
        }),
        Method::OneShot(OneShotConfig {
            density: 0.5,
            criterion: Criterion::Snip,
            at_init: true,
            fine_tune_iterations: None,
            allocation: Allocation::Global,
            synflow_iterations: 1,
            snip_batches: 1,
        }),
        Method::Gmp(GmpConfig {
            final_density: 0.5,
            begin: 2,
            end: 14,
            every: 3,
            allocation: Allocation::Global,
        }),
        Method::Bip(BipConfig::with_density(0.5)),
    ];
    for method in &methods {
        method.check_pattern(&p).unwrap();
        for ap in [None, Some(ApConfig::with_rate(0.02))] {
            let data = toy(64, 1);
            let m = model(2);
            let cfg = recipe(16);
            let mut masks: Vec<Mask> = vec![];
            let s = RunSetup {
                pattern: Some(p),
                ..setup(&m, &data, &cfg, method, ap.as_ref())
            };
            run_method(
                &s,
                |_, mask| {
                    masks.push(mask.copy());
                    Ok(())
                },
                |_, _| {},
            )
            .unwrap();
            let last = masks.last().unwrap();
            assert!(
                p.holds_exactly(last),
                "{}: not 2:4 at the end",
                method.name()
            );
            for w in masks.windows(2) {
                assert!(w[1].is_subset_of(&w[0]), "{}: a mask grew", method.name());
            }
        }
    }
}

/// Methods that cannot keep a pattern, and settings that would not end on it, are
/// rejected with the field to change.
#[test]
fn settings_that_cannot_keep_the_pattern_are_rejected() {
    let p = NmPattern::new(2, 4).unwrap();
    let err = |m: Method| m.check_pattern(&p).unwrap_err().to_string();
    let imp = |rounds, rate| {
        Method::Imp(ImpConfig {
            rounds,
            rate,
            criterion: Criterion::Magnitude,
            allocation: Allocation::Global,
            rewind_iteration: 0,
        })
    };
    // 0.8^3 = 0.512 > 0.5: the rounds end above the pattern's density.
    let e = err(imp(3, 0.2));
    assert!(e.contains("prune.rounds") && e.contains("0.5120"), "{e}");
    // 0.8^4 = 0.41: round 4 reaches it, so a fifth would prune nothing.
    let e = err(imp(5, 0.2));
    assert!(e.contains("round 4") && e.contains("rounds = 4"), "{e}");
    imp(4, 0.2).check_pattern(&p).unwrap();
    let one_shot = |density, criterion| {
        Method::OneShot(OneShotConfig {
            density,
            criterion,
            at_init: false,
            fine_tune_iterations: None,
            allocation: Allocation::Global,
            synflow_iterations: 1,
            snip_batches: 1,
        })
    };
    let e = err(one_shot(0.3, Criterion::Magnitude));
    assert!(e.contains("prune.density") && e.contains("0.5"), "{e}");
    let e = err(one_shot(0.5, Criterion::Synflow));
    assert!(e.contains("synflow") && e.contains("pattern"), "{e}");
    let e = err(Method::Granet(GranetConfig {
        final_density: 0.5,
        initial_density: 1.0,
        begin: 0,
        end: 10,
        every: 2,
        drop_fraction: 0.5,
        allocation: Allocation::Global,
    }));
    assert!(
        e.contains("granet") && e.contains("imp, lrr, one_shot, gmp and bip"),
        "{e}"
    );
}
