//! The host criteria by name (the `criterion` setting of a run).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A host pruning criterion: how the weights a pruning event removes are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// |w| ([`crate::magnitude_scores`]).
    #[default]
    Magnitude,
    /// Uniform random scores ([`crate::random_scores`]).
    Random,
    /// Layer-adaptive magnitude (Lee et al. 2021, [`crate::lamp_scores`]).
    Lamp,
    /// Connection sensitivity |g ⊙ w| on labelled batches (Lee et al. 2019, [`crate::snip_scores`]).
    Snip,
    /// Iterative synaptic flow, data-free (Tanaka et al. 2020, [`crate::synflow_select`]).
    Synflow,
}

impl Criterion {
    /// Every criterion, in declaration order.
    pub const ALL: [Criterion; 5] = [
        Criterion::Magnitude,
        Criterion::Random,
        Criterion::Lamp,
        Criterion::Snip,
        Criterion::Synflow,
    ];

    /// The name used in settings files (the serde name).
    pub fn name(self) -> &'static str {
        match self {
            Criterion::Magnitude => "magnitude",
            Criterion::Random => "random",
            Criterion::Lamp => "lamp",
            Criterion::Snip => "snip",
            Criterion::Synflow => "synflow",
        }
    }

    /// The valid names, comma-separated (for error messages).
    pub fn names() -> String {
        Self::ALL.map(Criterion::name).join(", ")
    }

    /// Whether scoring runs the model (SNIP needs labelled batches, SynFlow only the
    /// input shape); the others read the weights alone.
    pub fn needs_model(self) -> bool {
        matches!(self, Criterion::Snip | Criterion::Synflow)
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown criterion name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown criterion `{name}`; valid criteria: {valid}")]
pub struct UnknownCriterion {
    /// The name given.
    pub name: String,
    /// The valid names.
    pub valid: String,
}

impl FromStr for Criterion {
    type Err = UnknownCriterion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCriterion {
                name: s.to_string(),
                valid: Self::names(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for c in Criterion::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
            assert_eq!(serde_json::from_str::<Criterion>(&json).unwrap(), c);
            assert_eq!(c.name().parse::<Criterion>().unwrap(), c);
            assert_eq!(c.to_string(), c.name());
        }
        let e = "grasp".parse::<Criterion>().unwrap_err().to_string();
        assert!(e.contains("grasp") && e.contains("synflow"), "{e}");
        assert_eq!(Criterion::default(), Criterion::Magnitude);
    }
}
