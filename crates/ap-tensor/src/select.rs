//! Exact-count selection of the smallest scores.
//!
//! Pruning by a threshold (`score <= t`) removes more than asked for when scores tie
//! (zeros, rewound weights, quantised values). Here exactly `n` positions are chosen:
//! everything strictly below the n-th smallest value, then the tied positions in order
//! of their position, which is what a stable sort would pick. Cost on large inputs: a
//! few streaming passes (concatenation, two bound comparisons, the final comparison) and
//! a `kthvalue` over the few values between two sampled bounds ([`kth_smallest`]).

use tch::{Kind, Tensor};

use crate::{nonzero_counts, to_f64_vec};

/// Why a selection could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    /// More positions were asked for than are eligible.
    #[error("asked to select {requested} positions but only {eligible} are eligible")]
    TooFew {
        /// Positions asked for.
        requested: i64,
        /// Positions eligible.
        eligible: i64,
    },
    /// Scores and eligibility masks do not line up.
    #[error("scores and eligibility differ: {0}")]
    ShapeMismatch(String),
}

/// Selects exactly `n` eligible positions with the smallest scores, ranked globally
/// across all tensors. Ties are broken by position in the concatenation of the tensors
/// (their order, then row-major), like a stable ascending sort.
///
/// `eligible` holds 0/1 (any kind) or boolean tensors shaped like `scores`. Returns one
/// boolean tensor per input, true where selected. Scores must not be NaN.
pub fn select_smallest(
    scores: &[&Tensor],
    eligible: &[&Tensor],
    n: i64,
) -> Result<Vec<Tensor>, SelectError> {
    let (n_scores, n_eligible) = (scores.len(), eligible.len());
    if n_scores != n_eligible {
        let why = format!("{n_scores} score tensors, {n_eligible} eligibility tensors");
        return Err(SelectError::ShapeMismatch(why));
    }
    for (s, e) in scores.iter().zip(eligible) {
        if s.size() != e.size() {
            return Err(SelectError::ShapeMismatch(format!(
                "{:?} vs {:?}",
                s.size(),
                e.size()
            )));
        }
    }
    if scores.is_empty() {
        return if n == 0 {
            Ok(vec![])
        } else {
            Err(SelectError::TooFew {
                requested: n,
                eligible: 0,
            })
        };
    }
    let flat_elig = flat_cat(eligible, Some(Kind::Bool));
    let count = nonzero_counts(&[&flat_elig])[0];
    if n > count || n < 0 {
        return Err(SelectError::TooFew {
            requested: n,
            eligible: count,
        });
    }
    if n == 0 {
        return Ok(split_like(&flat_elig.zeros_like(), scores));
    }
    // Ineligible positions score +∞, so the n smallest (n ≤ eligible) are all eligible.
    let mut flat = flat_cat(scores, None);
    if count < flat_elig.numel() as i64 {
        let _ = flat.masked_fill_(&flat_elig.logical_not(), f64::INFINITY);
    }
    let (kth, counts) = kth_smallest(&flat, n, SAMPLE);
    if kth.is_infinite() && kth > 0.0 {
        // Eligible scores of +∞ would tie with the ineligible ones: rank the eligible
        // positions alone.
        let idx = flat_elig.nonzero().squeeze_dim(1);
        let s = flat.index_select(0, &idx);
        let (kth, _) = s.kthvalue(n, 0, false);
        let take = first_n_with_ties(&s, &kth, n);
        return Ok(split_like(
            &flat_elig.zeros_like().index_copy(0, &idx, &take),
            scores,
        ));
    }
    Ok(split_like(&smallest_n_at(&flat, kth, n, counts), scores))
}

/// Sample size of [`kth_smallest`]'s bounds: large enough that the bounds almost always
/// hold, small enough that sorting it costs nothing next to a pass over the scores.
pub const SAMPLE: i64 = 1 << 14;

/// How many of the scores lie strictly below the n-th smallest value, and how many
/// equal it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rank {
    /// Scores `< kth`.
    pub below: i64,
    /// Scores `== kth`.
    pub tied: i64,
}

/// The `n`-th smallest value (1-based) of the flat, NaN-free `s`, exactly, with the
/// counts below and at it. Cheaper than `kthvalue` on large inputs: a strided sample of
/// `sample` values gives two bounds that bracket the n-th value with near certainty; two
/// comparison passes count what lies below and between them, and `kthvalue` runs on the
/// few values between. When the bounds miss (an adversarial order), it falls back to
/// `kthvalue` over all of `s`, so the answer is always exact. Requires 1 ≤ n ≤ numel.
pub fn kth_smallest(s: &Tensor, n: i64, sample: i64) -> (f64, Rank) {
    let total = s.numel() as i64;
    assert!(
        (1..=total).contains(&n),
        "kth_smallest: n = {n} outside 1..={total}"
    );
    let ranked = |values: &Tensor, k: i64| -> (f64, Rank) {
        let kth = values.kthvalue(k, 0, false).0.double_value(&[]);
        let c = nonzero_counts(&[&values.lt(kth), &values.eq(kth)]);
        (
            kth,
            Rank {
                below: c[0],
                tied: c[1],
            },
        )
    };
    if total <= 4 * sample.max(1) {
        return ranked(s, n);
    }
    // Bounds: the sample's values at the target rank ± 4 standard deviations of a
    // sample quantile (plus slack), so the true n-th value lies between them.
    let stride = total / sample;
    let sorted = s.slice(0, 0, total, stride).sort(0, false).0;
    let m = sorted.size()[0];
    let rank = (n as f64 / total as f64) * m as f64;
    let spread = 4.0 * (m as f64 * 0.25).sqrt() + 8.0;
    let at = |r: f64| r.clamp(0.0, (m - 1) as f64) as i64;
    let bounds = to_f64_vec(&sorted.index_select(
        0,
        &Tensor::from_slice(&[at(rank - spread), at(rank + spread)]).to_device(s.device()),
    ));
    let (lo, hi) = (bounds[0], bounds[1]);
    let below_lo = s.lt(lo);
    let up_to_hi = s.le(hi);
    let c = nonzero_counts(&[&below_lo, &up_to_hi]);
    let (below, up_to) = (c[0], c[1]);
    if !(below < n && n <= up_to) {
        return ranked(s, n);
    }
    // nonzero + index_select: faster than masked_select on the CPU.
    let idx = up_to_hi.logical_xor(&below_lo).nonzero().squeeze_dim(1);
    let (kth, rank) = ranked(&s.index_select(0, &idx), n - below);
    (
        kth,
        Rank {
            below: below + rank.below,
            tied: rank.tied,
        },
    )
}

/// True at the `n` positions of flat `s` a stable ascending sort puts first, given its
/// n-th smallest value `kth` and the counts below and at it ([`kth_smallest`]): one
/// comparison pass, plus a scan of the tied positions when only some of them are taken.
pub fn smallest_n_at(s: &Tensor, kth: f64, n: i64, rank: Rank) -> Tensor {
    let need = n - rank.below;
    if need == rank.tied {
        return s.le(kth);
    }
    let tied = s.eq(kth).nonzero().squeeze_dim(1).slice(0, 0, need, 1);
    s.lt(kth).index_fill(0, &tied, 1)
}

/// Selects exactly `counts[i]` positions within each tensor independently (layer-wise
/// pruning), with the same tie rule as [`select_smallest`].
pub fn select_smallest_per_tensor(
    scores: &[&Tensor],
    eligible: &[&Tensor],
    counts: &[i64],
) -> Result<Vec<Tensor>, SelectError> {
    if counts.len() != scores.len() {
        return Err(SelectError::ShapeMismatch(format!(
            "{} counts for {} tensors",
            counts.len(),
            scores.len()
        )));
    }
    let mut out = Vec::with_capacity(scores.len());
    for ((s, e), &n) in scores.iter().zip(eligible).zip(counts) {
        out.extend(select_smallest(&[s], &[e], n)?);
    }
    Ok(out)
}

/// Every tensor detached, flattened and (when `kind` is given) converted, concatenated
/// in order: the flat position space in which [`select_smallest`] ranks and breaks ties.
pub fn flat_cat(tensors: &[&Tensor], kind: Option<Kind>) -> Tensor {
    let flat: Vec<Tensor> = tensors
        .iter()
        .map(|t| {
            let f = t.detach().flatten(0, -1);
            match kind {
                Some(k) => f.to_kind(k),
                None => f,
            }
        })
        .collect();
    Tensor::cat(&flat, 0)
}

/// The tie rule of [`select_smallest`]: of the flat scores `s` and their `n`-th smallest
/// value `kth`, true at the `n` positions a stable ascending sort puts first (everything
/// strictly below `kth`, then the positions equal to it in position order).
pub fn first_n_with_ties(s: &Tensor, kth: &Tensor, n: i64) -> Tensor {
    let less = s.lt_tensor(kth);
    let tied = s.eq_tensor(kth);
    let need = -less.sum(Kind::Int64) + n;
    let tied_rank = tied.cumsum(0, Kind::Int64);
    less.logical_or(&tied.logical_and(&tied_rank.le_tensor(&need)))
}

/// Splits a flat tensor (as [`flat_cat`] makes) back into tensors shaped like `like`.
pub fn split_like(flat: &Tensor, like: &[&Tensor]) -> Vec<Tensor> {
    let sizes: Vec<i64> = like.iter().map(|t| t.numel() as i64).collect();
    flat.split_with_sizes(&sizes, 0)
        .into_iter()
        .zip(like)
        .map(|(t, l)| t.view(l.size().as_slice()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: stable sort of (score, position) over eligible positions on the host.
    fn reference(scores: &[Vec<f32>], eligible: &[Vec<bool>], n: usize) -> Vec<Vec<bool>> {
        let mut flat: Vec<(f32, usize, usize)> = vec![];
        for (ti, (s, e)) in scores.iter().zip(eligible).enumerate() {
            for (i, (&v, &ok)) in s.iter().zip(e).enumerate() {
                if ok {
                    flat.push((v, ti, i));
                }
            }
        }
        flat.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap()); // stable: keeps position order on ties
        let mut out: Vec<Vec<bool>> = scores.iter().map(|s| vec![false; s.len()]).collect();
        for &(_, ti, i) in flat.iter().take(n) {
            out[ti][i] = true;
        }
        out
    }

    fn to_bools(t: &Tensor) -> Vec<bool> {
        Vec::<i64>::try_from(&t.flatten(0, -1).to_kind(Kind::Int64))
            .unwrap()
            .into_iter()
            .map(|v| v != 0)
            .collect()
    }

    /// Tensors of small integer-valued scores (many ties) with random eligibility, drawn
    /// to reach the edges: no tensors at all, empty tensors (numel 0), tensors with no
    /// eligible position (a fully pruned layer) or all eligible, and a fraction that is
    /// exactly 0 or exactly 1 (n = 0 and n = every eligible position) besides the range.
    fn case() -> impl Strategy<Value = (Vec<Vec<f32>>, Vec<Vec<bool>>, f64)> {
        // Per tensor: values, eligibility, and an override (None = as drawn, Some(b) = all b).
        let tensor = (
            prop::collection::vec((0i32..6, any::<bool>()), 0..40),
            prop_oneof![2 => Just(None), 1 => Just(Some(false)), 1 => Just(Some(true))],
        );
        prop::collection::vec(tensor, 0..5).prop_flat_map(|ts| {
            let scores = ts
                .iter()
                .map(|(t, _)| t.iter().map(|(v, _)| *v as f32 - 2.0).collect())
                .collect();
            let elig = ts
                .iter()
                .map(|(t, all)| t.iter().map(|(_, e)| all.unwrap_or(*e)).collect())
                .collect();
            let frac = prop_oneof![Just(0.0f64), Just(1.0f64), 0.0f64..=1.0];
            (Just(scores), Just(elig), frac)
        })
    }

    proptest! {
        // Each case is a handful of tiny tensors: cheap enough to draw many.
        #![proptest_config(ProptestConfig::with_cases(1024))]
        #[test]
        fn global_selection_matches_stable_sort((scores, elig, frac) in case()) {
            let n_elig = elig.iter().flatten().filter(|&&e| e).count();
            let n = (frac * n_elig as f64).floor() as usize;
            let st: Vec<Tensor> = scores.iter().map(|s| Tensor::from_slice(s)).collect();
            let et: Vec<Tensor> = elig.iter().map(|e| Tensor::from_slice(e)).collect();
            let got = select_smallest(&st.iter().collect::<Vec<_>>(), &et.iter().collect::<Vec<_>>(), n as i64).unwrap();
            let got: Vec<Vec<bool>> = got.iter().map(to_bools).collect();
            // exactly n, only eligible, and the same positions as a stable sort picks
            prop_assert_eq!(got.iter().flatten().filter(|&&b| b).count(), n);
            for (g, e) in got.iter().flatten().zip(elig.iter().flatten()) {
                prop_assert!(!*g || *e);
            }
            prop_assert_eq!(got, reference(&scores, &elig, n));
        }

        #[test]
        fn per_tensor_selection_counts((scores, elig, frac) in case()) {
            let counts: Vec<i64> = elig.iter().map(|e| (frac * e.iter().filter(|&&b| b).count() as f64).floor() as i64).collect();
            let st: Vec<Tensor> = scores.iter().map(|s| Tensor::from_slice(s)).collect();
            let et: Vec<Tensor> = elig.iter().map(|e| Tensor::from_slice(e)).collect();
            let got = select_smallest_per_tensor(&st.iter().collect::<Vec<_>>(), &et.iter().collect::<Vec<_>>(), &counts).unwrap();
            for (i, g) in got.iter().enumerate() {
                prop_assert_eq!(to_bools(g), reference(&scores[i..=i], &elig[i..=i], counts[i] as usize).remove(0));
            }
        }
    }

    proptest! {
        /// The sampled bounds with tiny samples (so they often miss and fall back), on
        /// orders that defeat a strided sample (sorted, reversed, blocks) and on many ties:
        /// the value and counts equal a host sort's, and the selection a stable sort's.
        #[test]
        fn kth_smallest_is_exact(
            values in prop::collection::vec(-20i32..20, 1..300),
            order in 0u8..3,
            sample in 1i64..9,
            frac in 0.0f64..=1.0,
        ) {
            let mut v: Vec<f32> = values.iter().map(|&x| x as f32 / 4.0).collect();
            match order {
                1 => v.sort_by(|a, b| a.partial_cmp(b).unwrap()),
                2 => v.sort_by(|a, b| b.partial_cmp(a).unwrap()),
                _ => {}
            }
            let n = ((frac * v.len() as f64).ceil() as i64).max(1);
            let (kth, rank) = kth_smallest(&Tensor::from_slice(&v), n, sample);
            let mut sorted = v.clone();
            sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let want = sorted[n as usize - 1];
            prop_assert_eq!(kth, f64::from(want));
            prop_assert_eq!(rank.below, v.iter().filter(|&&x| x < want).count() as i64);
            prop_assert_eq!(rank.tied, v.iter().filter(|&&x| x == want).count() as i64);
            let got = to_bools(&smallest_n_at(&Tensor::from_slice(&v), kth, n, rank));
            let all = vec![true; v.len()];
            prop_assert_eq!(got, reference(&[v], &[all], n as usize).remove(0));
        }
    }

    /// Large enough for the sampled path of `select_smallest` (more than 4 × SAMPLE
    /// values), with ties at the boundary and a third ineligible: the stable sort's picks.
    #[test]
    fn large_selection_takes_the_sampled_path() {
        let len = 5 * SAMPLE as usize + 17;
        let scores: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32).collect();
        let elig: Vec<bool> = (0..len).map(|i| i % 3 != 0).collect();
        let (a, b) = scores.split_at(len / 2);
        let (ea, eb) = elig.split_at(len / 2);
        let st = [Tensor::from_slice(a), Tensor::from_slice(b)];
        let et = [Tensor::from_slice(ea), Tensor::from_slice(eb)];
        for n in [1, 1000, len as i64 / 3, 2 * len as i64 / 3 - 1] {
            let got = select_smallest(&[&st[0], &st[1]], &[&et[0], &et[1]], n).unwrap();
            let got: Vec<Vec<bool>> = got.iter().map(to_bools).collect();
            let want = reference(
                &[a.to_vec(), b.to_vec()],
                &[ea.to_vec(), eb.to_vec()],
                n as usize,
            );
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn too_many_requested_is_an_error() {
        let s = Tensor::from_slice(&[1.0f32, 2.0]);
        let e = Tensor::from_slice(&[true, false]);
        assert_eq!(
            select_smallest(&[&s], &[&e], 2).unwrap_err(),
            SelectError::TooFew {
                requested: 2,
                eligible: 1
            }
        );
    }

    #[test]
    fn shapes_are_preserved() {
        let s = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([3, 4]);
        let e = Tensor::ones([3, 4], (Kind::Float, tch::Device::Cpu));
        let out = select_smallest(&[&s], &[&e], 5).unwrap();
        assert_eq!(out[0].size(), vec![3, 4]);
        assert_eq!(
            to_bools(&out[0]),
            (0..12).map(|i| i < 5).collect::<Vec<_>>()
        );
    }

    /// Edges by hand: an empty 2-D tensor keeps its shape `[0, 3]` and selects nothing, a
    /// tensor with no eligible position (a fully pruned layer) selects nothing, n = all
    /// eligible selects every eligible position, n = 0 selects none, and one more than
    /// eligible (or a negative n) is an error, globally and per tensor.
    #[test]
    fn empty_and_fully_ineligible_tensors() {
        let cpu = (Kind::Float, tch::Device::Cpu);
        let s0 = Tensor::zeros([0, 3], cpu);
        let e0 = Tensor::ones([0, 3], cpu);
        let s1 = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 1.0]).view([2, 2]);
        let e1 = Tensor::ones([2, 2], cpu);
        let s2 = Tensor::from_slice(&[5.0f32, -5.0, 5.0]);
        let e2 = Tensor::zeros([3], cpu);
        let (s, e) = (vec![&s0, &s1, &s2], vec![&e0, &e1, &e2]);
        let pick = |n| {
            select_smallest(&s, &e, n)
                .unwrap()
                .iter()
                .map(to_bools)
                .collect::<Vec<_>>()
        };
        // 0 first, then the tied 1s in position order
        assert_eq!(
            pick(3),
            vec![vec![], vec![true, true, true, false], vec![false; 3]]
        );
        assert_eq!(pick(4), vec![vec![], vec![true; 4], vec![false; 3]]);
        assert_eq!(pick(0), vec![vec![], vec![false; 4], vec![false; 3]]);
        let out = select_smallest(&s, &e, 1).unwrap();
        assert_eq!(out[0].size(), vec![0, 3]);
        assert_eq!(out[1].size(), vec![2, 2]);
        assert_eq!(
            select_smallest(&s, &e, 5).unwrap_err(),
            SelectError::TooFew {
                requested: 5,
                eligible: 4
            }
        );
        assert!(select_smallest(&s, &e, -1).is_err());
        let per = select_smallest_per_tensor(&s, &e, &[0, 4, 0]).unwrap();
        assert_eq!(to_bools(&per[1]), vec![true; 4]);
        assert_eq!(per[0].size(), vec![0, 3]);
        assert_eq!(
            select_smallest_per_tensor(&s, &e, &[0, 0, 1]).unwrap_err(),
            SelectError::TooFew {
                requested: 1,
                eligible: 0
            }
        );
        // nothing at all
        assert!(select_smallest(&[], &[], 0).unwrap().is_empty());
        assert!(select_smallest(&[], &[], 1).is_err());
    }
}
