//! N:M sparsity ([`NmPattern`]): of every M consecutive weights along a layer's input
//! dimension, N are kept — the one sparse pattern hardware accelerates (2:4 on NVIDIA's
//! sparse tensor cores).
//!
//! Groups: a weight of shape `[out, in, kh, kw]` (or `[out, in]`) is read as rows of
//! `in·kh·kw` weights in PyTorch's memory order, and each row is cut into groups of M
//! consecutive weights — Wanda's and NVIDIA ASP's reading for convolutions, and the layout
//! `torch.sparse.to_sparse_semi_structured` takes for a Linear layer's `[out, in]` weight.
//! A layer whose rows are not a multiple of M (LeNet-5's first convolution: 1·5·5 = 25) has
//! no groups; like ASP, the pattern leaves it dense, and [`NmPattern::fits`] says which.
//!
//! How a method honours the pattern ([`NmPattern::removable`]): an event ranks as it always
//! does, but never takes a group below N kept weights, and an event that would go below
//! the pattern's density takes every group to exactly N. A method whose events prune
//! monotonically then ends with every group keeping exactly N.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::{Kind, Tensor};

use crate::Mask;

/// N kept of every M consecutive weights along the input dimension (`"2:4"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NmPattern {
    /// Weights kept per group.
    pub n: i64,
    /// Weights per group.
    pub m: i64,
}

/// The largest M: ranking within a group compares every pair of its weights.
pub const MAX_GROUP: i64 = 64;

/// A pattern written wrongly (`"2-4"`, `"4:2"`, `"0:4"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern {text:?}: {problem}; write N:M with 1 ≤ N < M ≤ {MAX_GROUP}, e.g. \"2:4\"")]
pub struct PatternError {
    /// What was given.
    pub text: String,
    /// What is wrong with it.
    pub problem: String,
}

impl NmPattern {
    /// N:M, checked: 1 ≤ N < M ≤ [`MAX_GROUP`].
    pub fn new(n: i64, m: i64) -> Result<NmPattern, PatternError> {
        if n >= 1 && n < m && m <= MAX_GROUP {
            Ok(NmPattern { n, m })
        } else {
            Err(PatternError {
                text: format!("{n}:{m}"),
                problem: "N and M out of range".into(),
            })
        }
    }

    /// The density of a mask that keeps N of every M: N/M.
    pub fn density(&self) -> f64 {
        self.n as f64 / self.m as f64
    }

    /// Whether a weight of `shape` has groups: at least two dimensions, and rows (every
    /// dimension but the first) a multiple of M. A layer that does not fit stays dense.
    pub fn fits(&self, shape: &[i64]) -> bool {
        shape.len() >= 2 && shape[1..].iter().product::<i64>() % self.m == 0
    }

    /// Kept weights per group of a 0/1 or boolean tensor that [`fits`](Self::fits):
    /// `[groups]`, Int64.
    pub fn kept_per_group(&self, mask: &Tensor) -> Tensor {
        self.groups(&mask.to_kind(Kind::Int64))
            .sum_dim_intlist(1, false, Kind::Int64)
    }

    /// The tensor as `[groups, M]` (rows are a multiple of M, so groups never straddle two
    /// rows).
    fn groups(&self, t: &Tensor) -> Tensor {
        t.reshape([-1, self.m])
    }

    /// How many more weights each layer may lose: Σ over its groups of (kept − N), 0 for a
    /// layer that does not fit. In mask order.
    pub fn capacity(&self, mask: &Mask) -> Vec<i64> {
        mask.iter()
            .map(|(_, m)| {
                if !self.fits(&m.size()) {
                    return 0;
                }
                let over = self.kept_per_group(&m.gt(0.5)) - self.n;
                over.clamp_min(0).sum(Kind::Int64).int64_value(&[])
            })
            .collect()
    }

    /// Which `candidates` an event may remove without taking a group below N kept weights,
    /// when removals go by `scores` (smallest first, ties by position): in each group, the
    /// `kept − N` candidates that rank first among the group's candidates. Choosing the n
    /// smallest scores among these is exactly what a greedy pass over all candidates in
    /// score order makes when it skips a group once the group is at N (a candidate ranked
    /// r-th in its group is reached only after the r before it). All false in a layer that
    /// does not fit. `scores`, `candidates` and `mask` are in mask order, shaped alike.
    pub fn removable(
        &self,
        scores: &[&Tensor],
        candidates: &[&Tensor],
        mask: &Mask,
    ) -> Vec<Tensor> {
        scores
            .iter()
            .zip(candidates)
            .zip(mask.tensors())
            .map(|((s, c), m)| {
                let shape = m.size();
                let c = c.to_kind(Kind::Bool);
                if !self.fits(&shape) {
                    return c.zeros_like();
                }
                let rank = self.rank_in_group(s, &c);
                let room = (self.kept_per_group(&m.gt(0.5)) - self.n).unsqueeze(1);
                let c = self.groups(&c);
                c.logical_and(&rank.lt_tensor(&room))
                    .reshape(shape.as_slice())
            })
            .collect()
    }

    /// Each candidate's rank among the candidates of its group (ascending score, ties by
    /// position): `[groups, M]`, Int64; non-candidates get M. Every pair of the group is
    /// compared, which is exact (no sort, no sentinel value) and cheap for M ≤ 64.
    fn rank_in_group(&self, scores: &Tensor, candidates: &Tensor) -> Tensor {
        let s = self.groups(&scores.detach());
        let c = self.groups(candidates);
        let (si, sj) = (s.unsqueeze(2), s.unsqueeze(1)); // [G, M, 1] vs [G, 1, M]
        let idx = Tensor::arange(self.m, (Kind::Int64, s.device()));
        let earlier = idx.unsqueeze(1).gt_tensor(&idx.unsqueeze(0)); // [i, j]: j < i
        let before = sj
            .lt_tensor(&si)
            .logical_or(&sj.eq_tensor(&si).logical_and(&earlier.unsqueeze(0)));
        let before = before.logical_and(&c.unsqueeze(1));
        let rank = before.sum_dim_intlist(2, false, Kind::Int64);
        rank.where_self(&c, &Tensor::from(self.m).to_device(s.device()))
    }

    /// A 0/1 mask (the kind of `scores`) keeping the N highest `scores` of every group and
    /// every weight of a layer that does not fit: the M − N removed are the lowest, ties
    /// by position (the earlier goes), the tie rule of every selection in this project.
    pub fn keep_top(&self, scores: &Tensor) -> Tensor {
        let shape = scores.size();
        if !self.fits(&shape) {
            return scores.ones_like();
        }
        let all = Tensor::ones(shape.as_slice(), (Kind::Bool, scores.device()));
        // The M − N lowest go: ranks M − N and up (by ascending score) stay.
        let rank = self.rank_in_group(scores, &all);
        rank.ge(self.m - self.n)
            .reshape(shape.as_slice())
            .to_kind(scores.kind())
    }

    /// Whether every group of every layer that fits keeps exactly N.
    pub fn holds_exactly(&self, mask: &Mask) -> bool {
        mask.iter().all(|(_, m)| {
            !self.fits(&m.size()) || {
                let k = self.kept_per_group(&m.gt(0.5));
                k.eq(self.n).all().int64_value(&[]) == 1
            }
        })
    }
}

impl fmt::Display for NmPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.n, self.m)
    }
}

impl FromStr for NmPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem: &str| PatternError {
            text: s.to_string(),
            problem: problem.to_string(),
        };
        let (n, m) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let n: i64 = n
            .trim()
            .parse()
            .map_err(|_| bad("N is not a whole number"))?;
        let m: i64 = m
            .trim()
            .parse()
            .map_err(|_| bad("M is not a whole number"))?;
        NmPattern::new(n, m).map_err(|e| bad(&e.problem))
    }
}

impl Serialize for NmPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NmPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ap_tensor::NamedParams;
    use proptest::prelude::*;
    use tch::Device;

    fn tensor(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }

    fn host_bools(t: &Tensor) -> Vec<bool> {
        ap_tensor::to_f64_vec(&t.to_kind(Kind::Float))
            .into_iter()
            .map(|v| v != 0.0)
            .collect()
    }

    #[test]
    fn parses_and_prints() {
        let p: NmPattern = "2:4".parse().unwrap();
        assert_eq!(p, NmPattern { n: 2, m: 4 });
        assert_eq!(p.to_string(), "2:4");
        assert_eq!(p.density(), 0.5);
        for bad in ["2-4", "4:2", "0:4", "2:2", "a:4", "1:65"] {
            let e = bad.parse::<NmPattern>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("N:M"), "{e}");
        }
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"2:4\"");
        assert_eq!(serde_json::from_str::<NmPattern>(&json).unwrap(), p);
    }

    #[test]
    fn fits_rows_that_are_a_multiple_of_m() {
        let p = NmPattern::new(2, 4).unwrap();
        assert!(p.fits(&[300, 784]));
        assert!(p.fits(&[50, 20, 5, 5])); // 500 per row
        assert!(!p.fits(&[20, 1, 5, 5])); // 25 per row
        assert!(!p.fits(&[784])); // a bias has no rows
    }

    /// Host reference: per group, remove the M − N smallest by a stable ascending sort.
    fn reference_keep_top(v: &[f32], n: usize, m: usize) -> Vec<bool> {
        let mut out = vec![true; v.len()];
        for (g, chunk) in v.chunks(m).enumerate() {
            let mut order: Vec<usize> = (0..m).collect();
            order.sort_by(|&a, &b| chunk[a].partial_cmp(&chunk[b]).unwrap().then(a.cmp(&b)));
            for &i in &order[..m - n] {
                out[g * m + i] = false;
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// keep_top keeps exactly N per group, the N highest (ties: the earlier goes).
        #[test]
        fn keep_top_matches_the_host_reference(nm in (2i64..8).prop_flat_map(|m| (1..m, Just(m))), rows in 1i64..5, per_row in 1i64..4, vals in prop::collection::vec(prop_oneof![Just(0.0f32), Just(1.0f32), -2.0f32..2.0], 256)) {
            let (n, m) = nm;
            let p = NmPattern::new(n, m).unwrap();
            let cols = per_row * m;
            let v: Vec<f32> = vals.iter().cycle().take((rows * cols) as usize).copied().collect();
            let t = tensor(&v, &[rows, cols]);
            let kept = host_bools(&p.keep_top(&t));
            prop_assert_eq!(kept, reference_keep_top(&v, n as usize, m as usize));
        }

        /// Greedy in score order, skipping full groups, takes what `removable` allows:
        /// the n smallest removable scores are the greedy's first n.
        #[test]
        fn removable_is_the_greedy_under_group_floors(nm in (2i64..6).prop_flat_map(|m| (1..m, Just(m))), per_row in 1i64..4, vals in prop::collection::vec(prop_oneof![Just(0.5f32), -1.0f32..1.0], 64), pruned in prop::collection::vec(any::<bool>(), 64), cand in prop::collection::vec(any::<bool>(), 64)) {
            let (n, m) = nm;
            let p = NmPattern::new(n, m).unwrap();
            let len = (2 * per_row * m) as usize;
            let v: Vec<f32> = vals.iter().cycle().take(len).copied().collect();
            let keep: Vec<f32> = pruned.iter().cycle().take(len).map(|&b| if b { 0.0 } else { 1.0 }).collect();
            let is_cand: Vec<bool> = cand.iter().cycle().take(len).zip(&keep).map(|(&c, &k)| c && k > 0.0).collect();
            let shape = [2, per_row * m];
            let params = NamedParams::from_entries(vec![("w".into(), tensor(&v, &shape))]);
            let mut mask = Mask::dense(&params);
            mask.remove(&[tensor(&keep, &shape).eq(0.0)]).unwrap();
            let c = Tensor::from_slice(&is_cand).reshape(shape);
            let s = tensor(&v, &shape);
            let got = host_bools(&p.removable(&[&s], &[&c], &mask)[0]);
            // Greedy over candidates in (score, position) order.
            let mut order: Vec<usize> = (0..len).filter(|&i| is_cand[i]).collect();
            order.sort_by(|&a, &b| v[a].partial_cmp(&v[b]).unwrap().then(a.cmp(&b)));
            let mut left: Vec<i64> = keep.chunks(m as usize).map(|g| g.iter().sum::<f32>() as i64 - n).collect();
            let mut greedy = vec![false; len];
            for i in order {
                let g = i / m as usize;
                if left[g] > 0 {
                    left[g] -= 1;
                    greedy[i] = true;
                }
            }
            prop_assert_eq!(got, greedy);
        }
    }

    #[test]
    fn capacity_and_holds_exactly() {
        let p = NmPattern::new(2, 4).unwrap();
        let params = NamedParams::from_entries(vec![
            ("a".into(), Tensor::ones([2, 8], (Kind::Float, Device::Cpu))),
            ("b".into(), Tensor::ones([3, 5], (Kind::Float, Device::Cpu))),
        ]);
        let mut mask = Mask::dense(&params);
        assert_eq!(p.capacity(&mask), vec![8, 0]);
        assert!(!p.holds_exactly(&mask));
        let keep = p.keep_top(&Tensor::arange(16, (Kind::Float, Device::Cpu)).reshape([2, 8]));
        mask.remove(&[
            keep.eq(0.0),
            Tensor::zeros([3, 5], (Kind::Bool, Device::Cpu)),
        ])
        .unwrap();
        assert_eq!(p.capacity(&mask), vec![0, 0]);
        assert!(p.holds_exactly(&mask));
    }
}
