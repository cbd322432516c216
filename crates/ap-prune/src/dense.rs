//! No pruning: one training phase of the dense network. The baseline every table compares
//! with, and the trained network an essential-sparsity sweep (`ap sweep`) prunes.

use std::time::Instant;

use ap_criteria::ApConfig;
use ap_tensor::FieldError;
use ap_train::{NoHook, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::reach::LayerShape;
use crate::{Checkpoint, PruneError, PruningMethod, RunContext};

/// Train the dense network with the recipe and evaluate it (`method = "dense"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseConfig {}

impl PruningMethod for DenseConfig {
    fn name(&self) -> String {
        "dense".into()
    }

    fn check_layers(&self, _layers: &[LayerShape]) -> Result<(), PruneError> {
        Ok(())
    }

    fn validate(&self, _train: &TrainConfig, ap: Option<&ApConfig>) -> Result<(), PruneError> {
        match ap {
            Some(_) => Err(FieldError::new(
                "ap.enabled",
                "= true with prune.method = \"dense\": a dense run has no pruning event for AP \
                 to take a share of; set ap.enabled = false",
            )
            .into()),
            None => Ok(()),
        }
    }

    fn run(&self, ctx: &mut RunContext<'_>, _: Option<&Checkpoint>) -> Result<(), PruneError> {
        let t0 = Instant::now();
        let phase = ctx.train(0, ctx.train_config(), 0, &mut NoHook)?;
        ctx.finish_round(0, t0, vec![], phase, &[])
    }
}
