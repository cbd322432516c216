//! Seeded, device-independent batching.
//!
//! The shuffle order is computed on the host with a tiny self-contained RNG (splitmix64 +
//! Fisher–Yates), so it depends only on `(seed, epoch)`: not on torch's global RNG, the device,
//! or anything else that ran before. The permutation is moved to the device once per epoch and
//! batches are views (`narrow`) into it.

use tch::{Device, Tensor};

use crate::{DataError, Split};

/// The splitmix64 output function: a bijective 64-bit mixer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// splitmix64 (Steele, Lea & Flood 2014): small, fast, and good enough for shuffling.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..bound` without modulo bias (Lemire's multiply-and-reject).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(bound);
            if m as u64 >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The permutation of `0..n` used for `epoch` under `seed` (host-side, deterministic).
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<i64> {
    // Mixing the epoch before combining keeps nearby (seed, epoch) pairs on unrelated streams.
    let mut rng = SplitMix64(mix(seed.wrapping_add(mix(epoch ^ 0x5851_f42d_4c95_7f2d))));
    let mut perm: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    perm
}

/// Iterator over the index batches of one shuffled epoch.
///
/// Yields `i64` index tensors on the target device, each of `batch_size` elements except
/// possibly the last; together they are a permutation of `0..n`. Feed them to [`Split::batch`].
#[derive(Debug)]
pub struct ShuffledBatches {
    perm: Tensor,
    n: i64,
    batch_size: i64,
    pos: i64,
}

impl ShuffledBatches {
    /// Shuffles `0..n` for `(seed, epoch)` and moves the permutation to `device` (one transfer).
    pub fn new(
        n: usize,
        batch_size: usize,
        seed: u64,
        epoch: u64,
        device: Device,
    ) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::ZeroBatchSize);
        }
        let perm = Tensor::f_from_slice(&permutation(n, seed, epoch))?.f_to_device(device)?;
        Ok(Self {
            perm,
            n: n as i64,
            batch_size: batch_size as i64,
            pos: 0,
        })
    }

    /// Number of batches in the epoch (the last may be partial).
    pub fn num_batches(&self) -> usize {
        (self.n as usize).div_ceil(self.batch_size as usize)
    }

    /// The whole epoch's permutation (an `i64` tensor of length `n` on the device).
    pub fn permutation(&self) -> &Tensor {
        &self.perm
    }
}

impl Iterator for ShuffledBatches {
    type Item = Tensor;

    fn next(&mut self) -> Option<Tensor> {
        if self.pos >= self.n {
            return None;
        }
        let len = self.batch_size.min(self.n - self.pos);
        let batch = self.perm.narrow(0, self.pos, len);
        self.pos += len;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = ((self.n - self.pos) as usize).div_ceil(self.batch_size as usize);
        (left, Some(left))
    }
}

impl ExactSizeIterator for ShuffledBatches {}

/// In-order `(images, labels)` batches of a split, as views (no copies); for evaluation.
#[derive(Debug)]
pub struct EvalBatches<'a> {
    split: &'a Split,
    n: i64,
    batch_size: i64,
    pos: i64,
}

impl<'a> EvalBatches<'a> {
    pub(crate) fn new(split: &'a Split, batch_size: usize) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::ZeroBatchSize);
        }
        Ok(Self {
            split,
            n: split.len() as i64,
            batch_size: batch_size as i64,
            pos: 0,
        })
    }
}

impl Iterator for EvalBatches<'_> {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.n {
            return None;
        }
        let len = self.batch_size.min(self.n - self.pos);
        let out = (
            self.split.images.narrow(0, self.pos, len),
            self.split.labels.narrow(0, self.pos, len),
        );
        self.pos += len;
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = ((self.n - self.pos) as usize).div_ceil(self.batch_size as usize);
        (left, Some(left))
    }
}

impl ExactSizeIterator for EvalBatches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tch::Kind;

    fn epoch_batches(n: usize, b: usize, seed: u64, epoch: u64) -> Vec<Vec<i64>> {
        ShuffledBatches::new(n, b, seed, epoch, Device::Cpu)
            .unwrap()
            .map(|t| Vec::<i64>::try_from(&t).unwrap())
            .collect()
    }

    proptest! {
        #[test]
        fn batches_form_a_permutation(n in 0usize..500, b in 1usize..80, seed: u64, epoch in 0u64..1000) {
            let batches = epoch_batches(n, b, seed, epoch);
            prop_assert_eq!(batches.len(), n.div_ceil(b));
            for (i, batch) in batches.iter().enumerate() {
                let want = if i + 1 < batches.len() { b } else { n - b * i };
                prop_assert_eq!(batch.len(), want);
            }
            let mut all: Vec<i64> = batches.concat();
            all.sort_unstable();
            prop_assert_eq!(all, (0..n as i64).collect::<Vec<_>>());
        }

        #[test]
        fn order_depends_only_on_seed_and_epoch(n in 10usize..300, b in 1usize..50, seed: u64, epoch in 0u64..1000) {
            let _g = ap_testkit::torch_lock();
            let first = epoch_batches(n, b, seed, epoch);
            // Torch's global RNG must not matter.
            tch::manual_seed(seed as i64);
            let _ = Tensor::randn([4], (Kind::Float, Device::Cpu));
            prop_assert_eq!(&first, &epoch_batches(n, b, seed, epoch));
            prop_assert_ne!(first.concat(), permutation(n, seed, epoch + 1));
            prop_assert_ne!(first.concat(), permutation(n, seed.wrapping_add(1), epoch));
        }
    }

    #[test]
    fn zero_batch_size_is_an_error() {
        assert!(matches!(
            ShuffledBatches::new(5, 0, 1, 0, Device::Cpu),
            Err(DataError::ZeroBatchSize)
        ));
    }

    #[test]
    fn exact_size() {
        let mut it = ShuffledBatches::new(10, 4, 7, 0, Device::Cpu).unwrap();
        assert_eq!((it.len(), it.num_batches()), (3, 3));
        it.next();
        assert_eq!(it.len(), 2);
        assert_eq!(
            (it.permutation().kind(), it.permutation().size()),
            (Kind::Int64, vec![10])
        );
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut rng = SplitMix64(42);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[rng.below(3) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
    }
}
