//! AP's settings: the one definition of its fields and defaults (a spec's `[ap]` table adds
//! only whether AP is on).

use ap_tensor::FieldError;
use serde::{Deserialize, Serialize};

use super::ApOptions;

/// AP's settings. Every field has the released code's default, so `[ap] enabled = true`
/// alone is AP as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApConfig {
    /// p_AP: AP's share of each round-based event, as a fraction of surviving weights
    /// (released code: 0.02).
    #[serde(default = "ApConfig::default_rate")]
    pub rate: f64,
    /// For events whose size a schedule sets (one-shot, pruning at init, GMP, GraNet): AP
    /// takes at most this fraction of the event; 0.1 is the released code's 2 of 20 points.
    #[serde(default = "ApConfig::default_share")]
    pub share: f64,
    /// ... and at most this fraction of the weights that survive the event; 0.025 is the
    /// released code's 2% of S while 80% of S survives ([`super::Budget::from_count`]).
    #[serde(default = "ApConfig::default_survivor_share")]
    pub survivor_share: f64,
    /// Whether AP takes `share` of the drop of GraNet's and RigL's drop-and-grow. The drop
    /// keeps the density, so it is no pruning event in the paper's sense; off by default.
    #[serde(default)]
    pub in_drop_and_grow: bool,
    /// Candidate sign and score (the ablations of the paper's components).
    #[serde(default)]
    pub options: ApOptions,
    /// First event (0-based) at which AP acts.
    #[serde(default)]
    pub from_event: usize,
    /// Event before which AP stops (none: every event).
    #[serde(default)]
    pub until_event: Option<usize>,
}

impl Default for ApConfig {
    fn default() -> Self {
        ApConfig::with_rate(ApConfig::default_rate())
    }
}

impl ApConfig {
    /// AP with p_AP = `rate` and every other setting at its default.
    pub fn with_rate(rate: f64) -> ApConfig {
        ApConfig {
            rate,
            share: ApConfig::default_share(),
            survivor_share: ApConfig::default_survivor_share(),
            in_drop_and_grow: false,
            options: ApOptions::default(),
            from_event: 0,
            until_event: None,
        }
    }

    /// Default of [`ApConfig::rate`]: the released code's p_AP = 2% of S per event.
    pub fn default_rate() -> f64 {
        0.02
    }

    /// Default of [`ApConfig::share`]: the released code's 2 of 20 points.
    pub fn default_share() -> f64 {
        0.1
    }

    /// Default of [`ApConfig::survivor_share`]: the released code's 2% of S while 80%
    /// survive.
    pub fn default_survivor_share() -> f64 {
        0.025
    }

    /// Whether AP acts at event `index`.
    pub fn active(&self, index: usize) -> bool {
        index >= self.from_event && self.until_event.is_none_or(|u| index < u)
    }

    /// Checks the ranges that do not depend on the host method; errors name the field
    /// (`ap.<field>`). The host checks `rate` against its own rate.
    pub fn validate(&self) -> Result<(), FieldError> {
        let shares = [
            ("share", self.share),
            ("survivor_share", self.survivor_share),
        ];
        for (name, v) in shares {
            if !(0.0..1.0).contains(&v) {
                return Err(FieldError::out_of(format!("ap.{name}"), v, "[0, 1)"));
            }
        }
        if let Some(u) = self.until_event {
            if u <= self.from_event {
                let problem = format!(
                    "= {u} must be above ap.from_event = {}: AP would never act",
                    self.from_event
                );
                return Err(FieldError::new("ap.until_event", problem));
            }
        }
        Ok(())
    }

    /// Checks `0 ≤ rate < host_rate` for round-based hosts, whose events remove
    /// `host_rate` of the survivors; errors name the field.
    pub fn validate_rate(&self, host_rate: f64) -> Result<(), FieldError> {
        if self.rate >= 0.0 && self.rate < host_rate {
            Ok(())
        } else {
            let range = format!("[0, prune.rate = {host_rate})");
            Err(FieldError::out_of("ap.rate", self.rate, &range))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[ap]` with no fields is AP as released; every default has one source.
    #[test]
    fn empty_table_is_the_release() {
        let c: ApConfig = toml::from_str("").unwrap();
        assert_eq!(c, ApConfig::default());
        assert_eq!((c.rate, c.share, c.survivor_share), (0.02, 0.1, 0.025));
        assert!(c.active(0) && c.active(1000));
    }

    #[test]
    fn validation_names_the_field() {
        let c = ApConfig {
            share: 1.0,
            ..ApConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "ap.share");
        let c = ApConfig {
            from_event: 3,
            until_event: Some(3),
            ..ApConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "ap.until_event");
        let e = ApConfig::default().validate_rate(0.02).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ap.rate = 0.02 must be in [0, prune.rate = 0.02)"
        );
        assert!(ApConfig::default().validate_rate(0.2).is_ok());
    }
}
