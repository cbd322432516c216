//! How much of one pruning event is AP's (ap-spec §3.1).

use super::ApConfig;

/// Budget of one event: `n` in total, `n_ap` of it AP's (0 when AP is off or outside
/// its window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Weights the event removes in total.
    pub n: i64,
    /// AP's share of them.
    pub n_ap: i64,
}

impl Budget {
    /// Round-based methods: n = floor(p·S), n_AP = floor(p_AP·S) (ap-spec §3.1).
    pub fn from_rates(surviving: i64, rate: f64, ap: Option<&ApConfig>, event: usize) -> Budget {
        let n = (rate * surviving as f64).floor() as i64;
        let n_ap = ap
            .filter(|a| a.active(event))
            .map_or(0, |a| (a.rate * surviving as f64).floor() as i64);
        Budget {
            n,
            n_ap: n_ap.min(n),
        }
    }

    /// Events whose size a schedule sets (one-shot, pruning at initialisation, GMP and
    /// GraNet steps): the event removes `n` of the `surviving` weights and AP takes
    /// `min(floor(share · n), floor(survivor_share · (S − n)))` — at most a fraction of
    /// the event and at most a fraction of what survives it. With the defaults (0.1,
    /// 0.025) this is exactly the released code's 2% of S at p = 20% (2.5% of the 80%
    /// that survive), and a 95% one-shot event gives AP 0.125% of S, not 9.5%
    /// (docs/decisions.md, "AP's budget in events a schedule sets").
    pub fn from_count(n: i64, surviving: i64, ap: Option<&ApConfig>, event: usize) -> Budget {
        let n_ap = ap.filter(|a| a.active(event)).map_or(0, |a| {
            let of_event = (a.share * n as f64).floor() as i64;
            let of_survivors = (a.survivor_share * (surviving - n).max(0) as f64).floor() as i64;
            of_event.min(of_survivors)
        });
        Budget { n, n_ap }
    }

    /// AP's share of a drop-and-grow drop of `k` weights in one layer (with
    /// `ap.in_drop_and_grow`): floor(share · k).
    pub fn of_drop(k: i64, ap: Option<&ApConfig>) -> i64 {
        ap.map_or(0, |a| (a.share * k as f64).floor() as i64)
    }
}
