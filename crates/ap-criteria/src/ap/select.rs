//! AP's selection (ap-spec §3) and the ablations of its components: the candidate sign
//! filter and the score.

use ap_mask::{Mask, NmPattern};
use ap_tensor::{
    nonzero_counts, select_smallest, select_smallest_per_tensor, NamedParams, SelectError,
};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::random_scores;

/// Which kept weights AP may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CandidateSign {
    /// Only weights whose current value is < 0 (AP as published).
    #[default]
    Negative,
    /// Every kept weight (ablation: is the sign filter what matters?).
    Any,
}

/// How AP ranks its candidates (the smallest are removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ApScore {
    /// Movement |w_T − w_0| since the start of the phase (AP as published).
    #[default]
    Movement,
    /// Current magnitude |w_T| (ablation).
    Magnitude,
    /// Uniform random scores from [`random_scores`] with this seed (ablation). The same
    /// seed gives the same priorities at every event; derive a seed per event (e.g.
    /// `derive_seed(seed, "ap-event-3")`) for independent draws.
    Random {
        /// Seed of the random scores.
        seed: u64,
    },
}

/// AP's candidate filter and score. Settings: `{ sign = "any", score = "magnitude" }`,
/// `score = { random = { seed = 7 } }`; missing fields take the published defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ApOptions {
    /// Candidate sign filter (default: negative).
    pub sign: CandidateSign,
    /// Candidate score (default: movement).
    pub score: ApScore,
}

/// AP's choice for one pruning event.
#[derive(Debug)]
pub struct ApSelection {
    /// Boolean tensors in mask order, true = remove.
    pub selected: Vec<Tensor>,
    /// Weights chosen (≤ the budget).
    pub removed: i64,
    /// Budget left unused because too few candidates were kept.
    pub shortfall: i64,
    /// With a per-layer budget: each layer's shortfall, in mask order.
    pub layer_shortfall: Option<Vec<i64>>,
}

/// Chooses up to `n` weights to remove the AP way: candidates are kept weights (in
/// `mask`, after the host method has pruned) whose current value is negative; among
/// them, those with the smallest movement `|w_T − w_0|` since `phase_start`, ranked
/// globally across layers, ties by position. Same as [`ap_select_with`] with the
/// default [`ApOptions`].
pub fn ap_select(
    current: &NamedParams,
    phase_start: &NamedParams,
    mask: &Mask,
    n: i64,
) -> Result<ApSelection, SelectError> {
    ap_select_with(current, phase_start, mask, n, &ApOptions::default())
}

/// AP's selection with its components chosen by `opts`: candidates are the kept weights
/// passing the sign filter; up to `n` of them with the smallest score are removed,
/// ranked globally, ties by position. When fewer than `n` candidates exist all are
/// removed and the rest is reported as `shortfall`. `phase_start` is read only for the
/// movement score. Errors when `n` is negative or the tensors do not line up.
pub fn ap_select_with(
    current: &NamedParams,
    phase_start: &NamedParams,
    mask: &Mask,
    n: i64,
    opts: &ApOptions,
) -> Result<ApSelection, SelectError> {
    ap_select_budget(current, phase_start, mask, ApBudget::Global(n), opts, None)
}

/// How many weights AP removes in one event: one global count, or one count per layer
/// (when the host prunes layer-wise, AP keeps to the same per-layer rates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApBudget {
    /// Ranked across all layers.
    Global(i64),
    /// Ranked within each layer, counts in mask order.
    PerLayer(Vec<i64>),
}

/// [`ap_select_with`] for either kind of budget. With a per-layer budget, each layer's
/// shortfall is its own (`layer_shortfall`), so the host can make it up in that layer.
/// With an N:M `pattern`, AP chooses within each group: a candidate is one only while its
/// group keeps more than N ([`NmPattern::removable`] by AP's own score).
pub fn ap_select_budget(
    current: &NamedParams,
    phase_start: &NamedParams,
    mask: &Mask,
    budget: ApBudget,
    opts: &ApOptions,
    pattern: Option<&NmPattern>,
) -> Result<ApSelection, SelectError> {
    let requested: Vec<i64> = match &budget {
        ApBudget::Global(n) => vec![*n],
        ApBudget::PerLayer(c) => c.clone(),
    };
    if let Some(&n) = requested.iter().find(|&&n| n < 0) {
        return Err(SelectError::TooFew {
            requested: n,
            eligible: 0,
        });
    }
    if current.len() != mask.tensors().len() {
        return Err(SelectError::ShapeMismatch(format!(
            "{} parameters, {} mask tensors",
            current.len(),
            mask.tensors().len()
        )));
    }
    if matches!(&budget, ApBudget::PerLayer(c) if c.len() != current.len()) {
        return Err(SelectError::ShapeMismatch(format!(
            "{} per-layer AP counts for {} parameters",
            requested.len(),
            current.len()
        )));
    }
    let candidates = ap_candidates(current, mask, opts.sign);
    let scores = ap_scores(current, phase_start, opts.score)?;
    let scores: Vec<&Tensor> = scores.iter().collect();
    let candidates = match pattern {
        Some(p) => p.removable(&scores, &candidates.iter().collect::<Vec<_>>(), mask),
        None => candidates,
    };
    let candidates: Vec<&Tensor> = candidates.iter().collect();
    let available = nonzero_counts(&candidates);
    Ok(match budget {
        ApBudget::Global(n) => {
            let take = n.min(available.iter().sum());
            ApSelection {
                selected: select_smallest(&scores, &candidates, take)?,
                removed: take,
                shortfall: n - take,
                layer_shortfall: None,
            }
        }
        ApBudget::PerLayer(c) => {
            let take: Vec<i64> = c.iter().zip(&available).map(|(n, a)| *n.min(a)).collect();
            let short: Vec<i64> = c.iter().zip(&take).map(|(n, t)| n - t).collect();
            ApSelection {
                selected: select_smallest_per_tensor(&scores, &candidates, &take)?,
                removed: take.iter().sum(),
                shortfall: short.iter().sum(),
                layer_shortfall: Some(short),
            }
        }
    })
}

/// Kept weights that pass the sign filter (boolean tensors in mask order).
fn ap_candidates(current: &NamedParams, mask: &Mask, sign: CandidateSign) -> Vec<Tensor> {
    current
        .tensors()
        .iter()
        .zip(mask.tensors())
        .map(|(w, m)| {
            let kept = m.gt(0.5);
            match sign {
                CandidateSign::Negative => w.detach().lt(0.0).logical_and(&kept),
                CandidateSign::Any => kept,
            }
        })
        .collect()
}

/// AP's score per weight (smallest removed first).
fn ap_scores(
    current: &NamedParams,
    phase_start: &NamedParams,
    score: ApScore,
) -> Result<Vec<Tensor>, SelectError> {
    Ok(match score {
        ApScore::Movement => {
            if phase_start.len() != current.len() {
                return Err(SelectError::ShapeMismatch(format!(
                    "{} parameters, {} phase-start tensors",
                    current.len(),
                    phase_start.len()
                )));
            }
            current
                .tensors()
                .iter()
                .zip(phase_start.tensors())
                .map(|(w, w0)| {
                    (w.detach().f_sub(w0))
                        .map(|d| d.abs())
                        .map_err(|e| SelectError::ShapeMismatch(format!("movement: {e}")))
                })
                .collect::<Result<_, _>>()?
        }
        ApScore::Magnitude => current.tensors().iter().map(|w| w.detach().abs()).collect(),
        ApScore::Random { seed } => random_scores(current, seed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{flat, layers, named};
    use crate::{magnitude_scores, select_by_scores, Allocation};
    use proptest::prelude::*;

    fn shifted(now: &[Vec<f32>], shift: i32) -> Vec<Vec<f32>> {
        now.iter()
            .enumerate()
            .map(|(i, l)| {
                l.iter()
                    .enumerate()
                    .map(|(j, v)| v + (((i + j) as i32 % 3) + shift) as f32 / 4.0)
                    .collect()
            })
            .collect()
    }

    proptest! {
        /// AP removes exactly min(n, #candidates); every removal is a kept negative weight;
        /// each removed weight moved no more than any kept negative candidate.
        #[test]
        fn ap_removes_least_moved_negatives(now in layers(), shift in -3i32..3, prune_frac in 0.0f64..0.5, n in 0i64..40) {
            let start = shifted(&now, shift);
            let cur = named(&now);
            let w0 = named(&start);
            let mut mask = Mask::dense(&cur);
            let nprune = (prune_frac * cur.numel() as f64) as i64;
            let host = select_by_scores(&magnitude_scores(&cur), &mask, nprune, &Allocation::Global).unwrap();
            mask.remove(&host).unwrap();
            let keep = flat(&mask.tensors().iter().map(|t| t.gt(0.5)).collect::<Vec<_>>());
            let s = ap_select(&cur, &w0, &mask, n).unwrap();
            let sel = flat(&s.selected);
            let vals: Vec<f32> = now.iter().flatten().copied().collect();
            let mv: Vec<f32> = now.iter().flatten().zip(start.iter().flatten()).map(|(a, b)| (a - b).abs()).collect();
            let cands: Vec<usize> = (0..vals.len()).filter(|&i| keep[i] && vals[i] < 0.0).collect();
            prop_assert_eq!(s.removed, n.min(cands.len() as i64));
            prop_assert_eq!(s.removed + s.shortfall, n);
            prop_assert_eq!(sel.iter().filter(|&&b| b).count() as i64, s.removed);
            let max_removed = (0..vals.len()).filter(|&i| sel[i]).map(|i| { prop_assert!(keep[i] && vals[i] < 0.0); Ok(mv[i]) }).collect::<Result<Vec<_>, _>>()?.into_iter().fold(f32::MIN, f32::max);
            for &i in cands.iter().filter(|&&i| !sel[i]) {
                prop_assert!(max_removed <= mv[i]);
            }
        }

        /// Sign `Any` with the magnitude score: candidates are all kept weights, and the
        /// removed ones are the smallest |w| among them.
        #[test]
        fn ablation_any_sign_magnitude(now in layers(), prune_frac in 0.0f64..0.5, n in 0i64..40) {
            let cur = named(&now);
            let mut mask = Mask::dense(&cur);
            let r = crate::random_scores(&cur, 3);
            mask.remove(&r.iter().map(|t| t.lt(prune_frac)).collect::<Vec<_>>()).unwrap();
            let keep = flat(&mask.tensors().iter().map(|t| t.gt(0.5)).collect::<Vec<_>>());
            let opts = ApOptions { sign: CandidateSign::Any, score: ApScore::Magnitude };
            let s = ap_select_with(&cur, &cur, &mask, n, &opts).unwrap();
            let sel = flat(&s.selected);
            let mags: Vec<f32> = now.iter().flatten().map(|v| v.abs()).collect();
            let kept_count = keep.iter().filter(|&&k| k).count() as i64;
            prop_assert_eq!(s.removed, n.min(kept_count));
            let max_removed = (0..mags.len()).filter(|&i| sel[i]).map(|i| { prop_assert!(keep[i]); Ok(mags[i]) }).collect::<Result<Vec<_>, _>>()?.into_iter().fold(f32::MIN, f32::max);
            for i in (0..mags.len()).filter(|&i| keep[i] && !sel[i]) {
                prop_assert!(max_removed <= mags[i]);
            }
        }
    }

    #[test]
    fn any_sign_allows_positive_candidates() {
        let cur = named(&[vec![-1.0, 2.0, 3.0]]);
        let start = named(&[vec![-3.0, 2.0, 3.0]]);
        let mask = Mask::dense(&cur);
        let neg = ap_select(&cur, &start, &mask, 2).unwrap();
        assert_eq!((neg.removed, neg.shortfall), (1, 1));
        let any = ApOptions {
            sign: CandidateSign::Any,
            ..ApOptions::default()
        };
        let s = ap_select_with(&cur, &start, &mask, 2, &any).unwrap();
        // the positives did not move: they go first
        assert_eq!(flat(&s.selected), vec![false, true, true]);
        assert_eq!((s.removed, s.shortfall), (2, 0));
    }

    #[test]
    fn magnitude_score_picks_smallest_negative() {
        let cur = named(&[vec![-0.5, -2.0, 0.1, -0.2]]);
        let start = named(&[vec![-0.5, -2.0, 0.1, -5.0]]);
        let mask = Mask::dense(&cur);
        let opts = ApOptions {
            score: ApScore::Magnitude,
            ..ApOptions::default()
        };
        let s = ap_select_with(&cur, &start, &mask, 1, &opts).unwrap();
        assert_eq!(flat(&s.selected), vec![false, false, false, true]);
        // movement (the default) would pick the first unmoved negative instead
        let s = ap_select(&cur, &start, &mask, 1).unwrap();
        assert_eq!(flat(&s.selected), vec![true, false, false, false]);
    }

    #[test]
    fn random_score_is_deterministic_per_seed() {
        let v: Vec<f32> = (0..200).map(|i| -(i as f32) - 1.0).collect();
        let cur = named(&[v]);
        let mask = Mask::dense(&cur);
        let pick = |seed| {
            let opts = ApOptions {
                score: ApScore::Random { seed },
                ..ApOptions::default()
            };
            flat(
                &ap_select_with(&cur, &cur, &mask, 20, &opts)
                    .unwrap()
                    .selected,
            )
        };
        assert_eq!(pick(1), pick(1));
        assert_ne!(pick(1), pick(2));
        assert_eq!(pick(1).iter().filter(|&&b| b).count(), 20);
    }

    #[test]
    fn options_serde_defaults_and_forms() {
        let o: ApOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(
            o,
            ApOptions {
                sign: CandidateSign::Negative,
                score: ApScore::Movement
            }
        );
        let o: ApOptions =
            toml::from_str("sign = \"any\"\nscore = { random = { seed = 7 } }").unwrap();
        assert_eq!(
            o,
            ApOptions {
                sign: CandidateSign::Any,
                score: ApScore::Random { seed: 7 }
            }
        );
        let o: ApOptions = toml::from_str("score = \"magnitude\"").unwrap();
        assert_eq!(o.score, ApScore::Magnitude);
        assert!(toml::from_str::<ApOptions>("sgn = \"any\"").is_err());
        assert_eq!(
            serde_json::to_string(&ApOptions::default()).unwrap(),
            r#"{"sign":"negative","score":"movement"}"#
        );
    }

    #[test]
    fn ap_records_shortfall_and_rejects_negative_budget() {
        let cur = named(&[vec![-1.0, 2.0, 3.0]]);
        let mask = Mask::dense(&cur);
        let s = ap_select(&cur, &cur.snapshot(), &mask, 2).unwrap();
        assert_eq!((s.removed, s.shortfall), (1, 1));
        assert!(ap_select(&cur, &cur, &mask, -1).is_err());
    }

    /// How the edge-reaching AP test picks a budget from a candidate count.
    #[derive(Debug, Clone, Copy)]
    enum Pick {
        /// n = 0.
        Zero,
        /// n = every candidate.
        All,
        /// n = every candidate and `k` more (a shortfall of `k`).
        More(i64),
        /// A fixed n.
        N(i64),
    }

    impl Pick {
        fn n(self, candidates: i64) -> i64 {
            match self {
                Pick::Zero => 0,
                Pick::All => candidates,
                Pick::More(k) => candidates + k,
                Pick::N(n) => n,
            }
        }
    }

    fn pick() -> impl Strategy<Value = Pick> {
        prop_oneof![
            Just(Pick::Zero),
            Just(Pick::All),
            (1i64..4).prop_map(Pick::More),
            (0i64..40).prop_map(Pick::N),
        ]
    }

    /// Host reference: the first `n` candidates in a stable ascending sort of
    /// (score, position) over the given positions.
    fn stable_smallest(scores: &[f32], candidates: &[usize], n: usize) -> Vec<usize> {
        let mut c = candidates.to_vec();
        c.sort_by(|&a, &b| scores[a].partial_cmp(&scores[b]).unwrap()); // stable
        c.truncate(n);
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// AP's selection equals a host reference (stable sort of score then position over
        /// the candidates, first min(n, #candidates)) at the edges: n = 0, n = every
        /// candidate, n above the candidates (shortfall), no layers at all, empty layers, fully pruned
        /// layers, layers without a negative weight, and many tied scores; for both sign
        /// filters, the movement and magnitude scores, and global and per-layer budgets.
        #[test]
        fn ap_selection_matches_reference_at_the_edges(
            ls in prop::collection::vec(
                (prop::collection::vec((-4i32..4, prop::bool::weighted(0.8)), 0..30),
                 prop_oneof![3 => Just(false), 1 => Just(true)]),
                0..4),
            shift in -3i32..3,
            any_sign in any::<bool>(),
            magnitude in any::<bool>(),
            per_layer in any::<bool>(),
            picks in prop::collection::vec(pick(), 4),
        ) {
            let now: Vec<Vec<f32>> = ls.iter().map(|(l, _)| l.iter().map(|(v, _)| *v as f32 / 2.0).collect()).collect();
            // a fully pruned layer keeps nothing
            let keep: Vec<Vec<bool>> = ls.iter().map(|(l, dead)| l.iter().map(|(_, k)| *k && !dead).collect()).collect();
            let start = shifted(&now, shift);
            let cur = named(&now);
            let w0 = named(&start);
            let mut mask = Mask::dense(&cur);
            mask.remove(&keep.iter().map(|k| Tensor::from_slice(k).logical_not()).collect::<Vec<_>>()).unwrap();
            let opts = ApOptions {
                sign: if any_sign { CandidateSign::Any } else { CandidateSign::Negative },
                score: if magnitude { ApScore::Magnitude } else { ApScore::Movement },
            };
            // host scores and candidates, per layer and flat
            let score: Vec<Vec<f32>> = now.iter().zip(&start).map(|(l, l0)| l.iter().zip(l0).map(|(v, v0)| if magnitude { v.abs() } else { (v - v0).abs() }).collect()).collect();
            let cand: Vec<Vec<usize>> = now.iter().zip(&keep).map(|(l, k)| (0..l.len()).filter(|&i| k[i] && (any_sign || l[i] < 0.0)).collect()).collect();
            let mut expected: Vec<Vec<bool>> = now.iter().map(|l| vec![false; l.len()]).collect();
            let budget;
            let (removed, shortfall, layer_shortfall);
            if per_layer {
                let counts: Vec<i64> = cand.iter().zip(&picks).map(|(c, p)| p.n(c.len() as i64)).collect();
                let mut short = vec![];
                for (li, (c, &n)) in cand.iter().zip(&counts).enumerate() {
                    let take = n.min(c.len() as i64);
                    for i in stable_smallest(&score[li], c, take as usize) {
                        expected[li][i] = true;
                    }
                    short.push(n - take);
                }
                removed = counts.iter().zip(&short).map(|(n, s)| n - s).sum::<i64>();
                shortfall = short.iter().sum::<i64>();
                layer_shortfall = Some(short);
                budget = ApBudget::PerLayer(counts);
            } else {
                // flat position (layer order, then index) → (layer, index)
                let at: Vec<(usize, usize)> = now.iter().enumerate().flat_map(|(li, l)| (0..l.len()).map(move |i| (li, i))).collect();
                let flat_score: Vec<f32> = score.iter().flatten().copied().collect();
                let flat_cand: Vec<usize> = (0..at.len()).filter(|&f| cand[at[f].0].contains(&at[f].1)).collect();
                let n = picks[0].n(flat_cand.len() as i64);
                let take = n.min(flat_cand.len() as i64);
                for f in stable_smallest(&flat_score, &flat_cand, take as usize) {
                    expected[at[f].0][at[f].1] = true;
                }
                removed = take;
                shortfall = n - take;
                layer_shortfall = None;
                budget = ApBudget::Global(n);
            }
            let s = ap_select_budget(&cur, &w0, &mask, budget, &opts, None).unwrap();
            prop_assert_eq!((s.removed, s.shortfall), (removed, shortfall));
            prop_assert_eq!(s.layer_shortfall, layer_shortfall);
            let got: Vec<Vec<bool>> = s.selected.iter().map(|t| flat(std::slice::from_ref(t))).collect();
            prop_assert_eq!(got, expected);
            for (t, l) in s.selected.iter().zip(&now) {
                prop_assert_eq!(t.size(), vec![l.len() as i64]);
            }
        }
    }
}
