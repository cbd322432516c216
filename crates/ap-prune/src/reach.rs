//! What a run would leave of the network, worked out before it starts from the prunable
//! layers' shapes alone: a spec whose events would leave a layer without a single weight
//! (no signal passes, accuracy stays at chance) is rejected, naming the event.

use ap_criteria::Allocation;
use ap_tensor::FieldError;

use crate::PruneError;

/// A prunable layer's name and shape.
pub type LayerShape = (String, Vec<i64>);

/// Follows the kept counts of `layers` through events that each remove `n(S)` of the S
/// surviving weights, spread by `allocation`; `label(i)` names event i in errors. With a
/// layer-wise allocation every layer is followed and must keep a weight; with a global
/// one only the total is known, and it must keep at least one weight per layer.
pub(crate) fn follow_events(
    layers: &[LayerShape],
    allocation: &Allocation,
    events: usize,
    n: impl Fn(i64) -> i64,
    (field, label): (&str, impl Fn(usize) -> String),
) -> Result<(), PruneError> {
    let names: Vec<&str> = layers.iter().map(|(name, _)| name.as_str()).collect();
    let mut kept: Vec<i64> = layers.iter().map(|(_, s)| s.iter().product()).collect();
    let mut total: i64 = kept.iter().sum();
    for i in 0..events {
        let remove = n(total);
        let pairs: Vec<(&str, i64)> = names.iter().copied().zip(kept.iter().copied()).collect();
        match allocation.counts_for_kept(&pairs, remove) {
            Some(counts) => {
                for ((k, c), name) in kept.iter_mut().zip(&counts).zip(&names) {
                    *k -= c;
                    if *k <= 0 {
                        let problem = format!(
                            "{}: no weight of layer `{name}` would remain, so no signal \
                             would pass; prune less",
                            label(i)
                        );
                        return Err(FieldError::new(field, problem).into());
                    }
                }
                total = kept.iter().sum();
            }
            None => {
                total -= remove;
                check_total(total, layers.len(), field, &label(i))?;
            }
        }
    }
    Ok(())
}

/// Errors when `kept` weights cannot give each of `layers` prunable layers one.
fn check_total(kept: i64, layers: usize, field: &str, when: &str) -> Result<(), PruneError> {
    if kept < layers as i64 {
        let problem = format!(
            "{when}: only {kept} weights would remain for {layers} prunable layers, so some \
             layer would have none and no signal would pass; prune less"
        );
        return Err(FieldError::new(field, problem).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn layers() -> Vec<LayerShape> {
        vec![("a".into(), vec![10, 10]), ("b".into(), vec![2, 5])]
    }

    /// Global: 110 weights, rate 0.9 per round: 110 → 11 → 2 → 1; two layers need 2.
    #[test]
    fn global_rounds_stop_below_one_weight_per_layer() {
        let n = |s: i64| (0.9 * s as f64).floor() as i64;
        let label = ("prune.rounds", |i: usize| format!("round {}", i + 1));
        assert!(follow_events(&layers(), &Allocation::Global, 2, n, label).is_ok());
        let e = follow_events(&layers(), &Allocation::Global, 3, n, label).unwrap_err();
        assert!(
            e.to_string().contains("round 3") && e.to_string().contains("only 1"),
            "{e}"
        );
    }

    /// Layer-wise: layer `b` (10 weights) pruned at twice the rate empties first.
    #[test]
    fn layer_wise_rounds_name_the_layer_that_empties() {
        let over = Allocation::PerLayer {
            overrides: BTreeMap::from([("b".to_string(), 2.0)]),
        };
        let n = |s: i64| (0.5 * s as f64).floor() as i64;
        let label = ("prune.rounds", |i: usize| format!("round {}", i + 1));
        let e = follow_events(&layers(), &over, 5, n, label).unwrap_err();
        assert!(
            e.to_string().contains("round 1") && e.to_string().contains("`b`"),
            "{e}"
        );
        assert!(follow_events(&layers(), &Allocation::Uniform, 3, n, label).is_ok());
    }
}
