//! Training-time augmentation on the device, a batch at a time: random crop with zero padding
//! and random horizontal flips (the standard CIFAR recipe).
//!
//! The random choices (crop offsets, flips) are drawn on the host from a splitmix64 stream that
//! depends only on `(seed, step)`, never on torch's global RNG, and are moved to the device in
//! one transfer; the crop itself is two `gather`s and the flip one `where_self`, with no
//! per-sample loop over tensor ops.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::batch::{mix, SplitMix64};

/// Augmentation settings. The default does nothing.
///
/// Crops pad with **zero after normalisation**, i.e. with the per-channel training mean, not
/// with black: torchvision's `RandomCrop(32, padding=4)` on a PIL image pads black pixels that
/// normalisation then maps to `-mean / std`, so the border values differ (by ≈ 2.2 for
/// CIFAR-10) while everything inside the image is identical. Padding with the mean keeps the
/// operation on already normalised device tensors and is the usual choice for GPU-side
/// augmentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Pad each side by this many pixels (with 0), then crop an `H × W` window at a uniformly
    /// random offset in `[0, 2p]²` per sample. 0 disables cropping.
    pub crop_padding: i64,
    /// Mirror each sample left-right with probability 1/2.
    pub horizontal_flip: bool,
}

/// The host-side draws of one batch: per sample `(row offset, column offset, flip)`.
fn draws(batch: usize, padding: i64, seed: u64, step: u64) -> Vec<i64> {
    // Tagged so the stream is unrelated to the shuffling one for the same (seed, step).
    let mut rng = SplitMix64(mix(mix(seed ^ 0x6175_676d_656e_7421) ^ step));
    let span = 2 * padding.max(0) as u64 + 1;
    let mut out = Vec::with_capacity(3 * batch);
    for _ in 0..batch {
        // Always draw all three, so enabling one transform does not change the other's draws.
        out.push(rng.below(span) as i64);
        out.push(rng.below(span) as i64);
        out.push((rng.next_u64() >> 63) as i64);
    }
    out
}

impl Augment {
    /// No augmentation (same as [`Augment::default`]).
    pub const NONE: Augment = Augment {
        crop_padding: 0,
        horizontal_flip: false,
    };

    /// The standard CIFAR recipe (and the AP release's): crop with padding 4, random flip.
    pub const fn standard() -> Self {
        Augment {
            crop_padding: 4,
            horizontal_flip: true,
        }
    }

    /// Whether [`Augment::apply`] returns its input unchanged.
    pub const fn is_identity(&self) -> bool {
        self.crop_padding == 0 && !self.horizontal_flip
    }

    /// Augments a batch `images` (`[B, C, H, W]`, any float kind, any device) for training
    /// step `step` of a run seeded with `seed`; returns a tensor of the same shape, kind and
    /// device. Deterministic in `(seed, step)` and the batch size; independent of torch's
    /// global RNG. With [`Augment::is_identity`] the input is returned as is (a shallow
    /// clone).
    ///
    /// # Panics
    /// If `images` is not 4-dimensional or `crop_padding` is negative (caller bugs).
    pub fn apply(&self, images: &Tensor, seed: u64, step: u64) -> Tensor {
        let size = images.size();
        let &[b, c, h, w] = size.as_slice() else {
            panic!("Augment::apply: expected [B, C, H, W] images, got {size:?}");
        };
        let p = self.crop_padding;
        assert!(p >= 0, "Augment::apply: negative crop_padding {p}");
        if self.is_identity() || b == 0 {
            return images.shallow_clone();
        }
        let device = images.device();
        let drawn = Tensor::from_slice(&draws(b as usize, p, seed, step))
            .view([b, 3])
            .to_device(device);
        let mut out = images.shallow_clone();
        if p > 0 {
            let padded = images.constant_pad_nd([p, p, p, p]);
            let offsets = |col: i64, len: i64| {
                drawn.select(1, col).view([b, 1])
                    + Tensor::arange(len, (Kind::Int64, device)).view([1, len])
            };
            // Rows first: [B, C, H + 2p, W + 2p] -> [B, C, H, W + 2p]; then columns.
            let rows = offsets(0, h)
                .view([b, 1, h, 1])
                .expand([b, c, h, w + 2 * p], false);
            let cols = offsets(1, w).view([b, 1, 1, w]).expand([b, c, h, w], false);
            out = padded.gather(2, &rows, false).gather(3, &cols, false);
        }
        if self.horizontal_flip {
            let flip = drawn.select(1, 2).eq(1).view([b, 1, 1, 1]);
            out = out.flip([3]).where_self(&flip, &out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// `[b, c, h, w]` images with distinct, non-zero values.
    fn images(b: i64, c: i64, h: i64, w: i64) -> Tensor {
        (Tensor::arange(b * c * h * w, (Kind::Float, Device::Cpu)) + 1.0).view([b, c, h, w])
    }

    #[test]
    fn default_and_zero_padding_are_the_identity() {
        let x = images(4, 3, 8, 8);
        assert_eq!(Augment::default(), Augment::NONE);
        assert!(Augment::default().is_identity());
        assert!(Augment::default().apply(&x, 1, 2).equal(&x));
        // Padding 0 with flips off goes through the same early exit; with flips on, unflipped
        // samples are untouched.
        let crop0 = Augment {
            crop_padding: 0,
            horizontal_flip: true,
        };
        let y = crop0.apply(&x, 3, 4);
        let flips = draws(4, 0, 3, 4);
        for i in 0..4 {
            assert_eq!(flips[3 * i..3 * i + 2], [0, 0]);
            let want = if flips[3 * i + 2] == 1 {
                x.get(i as i64).flip([2])
            } else {
                x.get(i as i64)
            };
            assert!(y.get(i as i64).equal(&want));
        }
    }

    #[test]
    fn shapes_kind_and_determinism() {
        let _g = ap_testkit::torch_lock();
        let x = images(16, 3, 10, 12);
        let aug = Augment::standard();
        let a = aug.apply(&x, 7, 100);
        assert_eq!(
            (a.size(), a.kind(), a.device()),
            (x.size(), x.kind(), x.device())
        );
        // Torch's global RNG does not matter.
        tch::manual_seed(123);
        let _ = Tensor::randn([8], (Kind::Float, Device::Cpu));
        assert!(aug.apply(&x, 7, 100).equal(&a));
        assert!(!aug.apply(&x, 7, 101).equal(&a));
        assert!(!aug.apply(&x, 8, 100).equal(&a));
        // Half precision and an empty batch go through.
        let h = aug.apply(&x.to_kind(Kind::Half), 7, 100);
        assert_eq!(h.kind(), Kind::Half);
        assert!(h.equal(&a.to_kind(Kind::Half)));
        assert_eq!(
            aug.apply(&images(0, 3, 4, 4), 1, 1).size(),
            vec![0, 3, 4, 4]
        );
    }

    #[test]
    fn flip_mirrors_a_random_half() {
        let x = images(64, 2, 5, 6);
        let aug = Augment {
            crop_padding: 0,
            horizontal_flip: true,
        };
        let y = aug.apply(&x, 11, 0);
        let mut flipped = 0;
        for i in 0..64 {
            let (xi, yi) = (x.get(i), y.get(i));
            let mirror = xi.flip([2]);
            // A mirror reverses every row.
            assert!(mirror.double_value(&[1, 2, 0]) == xi.double_value(&[1, 2, 5]));
            if yi.equal(&mirror) {
                flipped += 1;
            } else {
                assert!(yi.equal(&xi), "sample {i} neither kept nor mirrored");
            }
        }
        assert!((16..=48).contains(&flipped), "{flipped} of 64 flipped");
    }

    #[test]
    fn crop_is_a_shifted_window_of_the_zero_padded_input() {
        let (b, c, h, w, p) = (24, 2, 5, 4, 2);
        let x = images(b, c, h, w);
        let aug = Augment {
            crop_padding: p,
            horizontal_flip: false,
        };
        let y = aug.apply(&x, 5, 9);
        let padded = x.constant_pad_nd([p, p, p, p]);
        let mut offsets = std::collections::HashSet::new();
        for i in 0..b {
            let found: Vec<(i64, i64)> = (0..=2 * p)
                .flat_map(|oy| (0..=2 * p).map(move |ox| (oy, ox)))
                .filter(|&(oy, ox)| {
                    padded
                        .get(i)
                        .narrow(1, oy, h)
                        .narrow(2, ox, w)
                        .equal(&y.get(i))
                })
                .collect();
            // Values are distinct and non-zero, so the window is unique.
            assert_eq!(found.len(), 1, "sample {i}: {found:?}");
            let d = draws(b as usize, p, 5, 9);
            let i = i as usize;
            assert_eq!(found[0], (d[3 * i], d[3 * i + 1]));
            offsets.insert(found[0]);
        }
        assert!(offsets.len() > 5, "offsets barely vary: {offsets:?}");
    }

    #[test]
    fn draws_cover_the_range() {
        let d = draws(3000, 4, 1, 2);
        for k in 0..2 {
            let mut seen = [0u32; 9];
            for v in d.iter().skip(k).step_by(3) {
                seen[*v as usize] += 1;
            }
            assert!(seen.iter().all(|&n| (250..420).contains(&n)), "{seen:?}");
        }
        let flips: i64 = d.iter().skip(2).step_by(3).sum();
        assert!((1350..1650).contains(&flips), "{flips}");
        // Flips do not depend on the padding.
        let d0 = draws(50, 0, 1, 2);
        let d4 = draws(50, 4, 1, 2);
        assert_ne!(d0, d4);
        let f = |d: &[i64]| d.iter().skip(2).step_by(3).copied().collect::<Vec<_>>();
        // (Each offset draw takes one u64 unless Lemire's rejection fires, p ≈ 9 / 2^64.)
        assert_eq!(f(&d0), f(&d4));
    }

    #[test]
    fn serde_round_trip_and_defaults() {
        let json = serde_json::to_string(&Augment::standard()).unwrap();
        assert_eq!(json, r#"{"crop_padding":4,"horizontal_flip":true}"#);
        assert_eq!(
            serde_json::from_str::<Augment>(&json).unwrap(),
            Augment::standard()
        );
        assert_eq!(
            serde_json::from_str::<Augment>("{}").unwrap(),
            Augment::default()
        );
        assert_eq!(
            serde_json::from_str::<Augment>(r#"{"horizontal_flip":true}"#).unwrap(),
            Augment {
                crop_padding: 0,
                horizontal_flip: true
            }
        );
        assert!(serde_json::from_str::<Augment>(r#"{"flip":true}"#).is_err());
    }

    #[test]
    #[should_panic(expected = "expected [B, C, H, W]")]
    fn three_dims_panic() {
        let _ = Augment::standard().apply(&images(1, 3, 4, 4).get(0), 0, 0);
    }
}
