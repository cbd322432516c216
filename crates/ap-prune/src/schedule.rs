//! Schedules of gradual and dynamic-sparse methods.

/// GMP's cubic sparsity schedule (Zhu & Gupta 2017):
/// s_t = s_f + (s_i − s_f)(1 − (t − t0)/(t_end − t0))³, clamped to [t0, t_end].
pub fn gmp_sparsity(t: u64, t0: u64, t_end: u64, s_i: f64, s_f: f64) -> f64 {
    if t <= t0 {
        return s_i;
    }
    if t >= t_end {
        return s_f;
    }
    let frac = (t - t0) as f64 / (t_end - t0) as f64;
    s_f + (s_i - s_f) * (1.0 - frac).powi(3)
}

/// Kept weights GMP targets at step t when pruning from sparsity `s_i` to `s_f`:
/// total − round(s_t · total).
pub fn gmp_target_kept(t: u64, t0: u64, t_end: u64, s_i: f64, s_f: f64, total: i64) -> i64 {
    total - (gmp_sparsity(t, t0, t_end, s_i, s_f) * total as f64).round() as i64
}

/// Cosine decay from `initial` at t = 0 to 0 at t = t_end (RigL's α_t, GraNet's drop rate).
pub fn cosine_decay(initial: f64, t: u64, t_end: u64) -> f64 {
    if t >= t_end {
        return 0.0;
    }
    initial / 2.0 * (1.0 + (std::f64::consts::PI * t as f64 / t_end as f64).cos())
}

/// True when an event happens at step `t`: t0 ≤ t ≤ t_end and (t − t0) is a multiple of `every`.
pub fn is_event_step(t: u64, t0: u64, t_end: u64, every: u64) -> bool {
    t >= t0 && t <= t_end && (t - t0) % every.max(1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The target is monotone in t, starts dense and ends at the final sparsity, and
        /// matches the formula to one weight.
        #[test]
        fn gmp_targets_follow_the_cubic(total in 1i64..1_000_000, s_f in 0.0f64..0.99, t0 in 0u64..100, len in 1u64..1000, t in 0u64..1200) {
            let t_end = t0 + len;
            let kept = gmp_target_kept(t, t0, t_end, 0.0, s_f, total);
            let exact = total as f64 * (1.0 - gmp_sparsity(t, t0, t_end, 0.0, s_f));
            prop_assert!((kept as f64 - exact).abs() <= 1.0);
            prop_assert!(gmp_target_kept(t + 1, t0, t_end, 0.0, s_f, total) <= kept);
            prop_assert_eq!(gmp_target_kept(t0, t0, t_end, 0.0, s_f, total), total);
            prop_assert_eq!(gmp_target_kept(t_end, t0, t_end, 0.0, s_f, total), total - (s_f * total as f64).round() as i64);
        }
    }

    /// GMP's targets worked out by hand from s_t = s_f + (s_i − s_f)(1 − (t − t0)/(t_end − t0))³
    /// on 1,000 weights (no value lands on a rounding tie).
    #[test]
    fn gmp_targets_by_hand() {
        // Dense start, s_f = 0.8, t0 = 0, t_end = 10.
        // t = 1: 0.8·(1 − 0.9³) = 0.8·0.271 = 0.2168 → 217 pruned, 783 kept.
        // t = 3: 0.8·(1 − 0.343) = 0.5256 → 526 pruned; t = 5: 0.8·0.875 = 0.7 → 700;
        // t = 7: 0.8·0.973 = 0.7784 → 778; t ≥ 10: 0.8 → 800.
        for (t, kept) in [
            (0, 1000),
            (1, 783),
            (3, 474),
            (5, 300),
            (7, 222),
            (10, 200),
            (12, 200),
        ] {
            assert_eq!(gmp_target_kept(t, 0, 10, 0.0, 0.8, 1000), kept, "t = {t}");
        }
        // Sparse start s_i = 0.5 (GraNet's sparse-to-sparse), s_f = 0.9, t0 = 2, t_end = 12.
        // t = 4: 0.9 − 0.4·0.8³ = 0.6952 → 695 pruned; t = 7: 0.9 − 0.4·0.125 = 0.85 → 850.
        for (t, kept) in [(0, 500), (2, 500), (4, 305), (7, 150), (12, 100)] {
            assert_eq!(gmp_target_kept(t, 2, 12, 0.5, 0.9, 1000), kept, "t = {t}");
        }
    }

    #[test]
    fn cosine_decay_ends() {
        assert_eq!(cosine_decay(0.5, 0, 100), 0.5);
        assert!((cosine_decay(0.5, 50, 100) - 0.25).abs() < 1e-12);
        assert_eq!(cosine_decay(0.5, 100, 100), 0.0);
        assert!(
            is_event_step(10, 10, 20, 5)
                && is_event_step(20, 10, 20, 5)
                && !is_event_step(25, 10, 20, 5)
                && !is_event_step(12, 10, 20, 5)
        );
    }
}
