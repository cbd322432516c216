//! Data sets for the pruning experiments.
//!
//! This crate owns everything between the files that `cargo xtask setup` places in the data
//! directory and the tensors a training loop consumes:
//!
//! * [`idx`]: a strict parser for the IDX format (raw or gzip) used by MNIST and Fashion-MNIST;
//! * [`Dataset`] / [`Split`]: validated, normalised image and label tensors on a device;
//! * [`ShuffledBatches`] / [`EvalBatches`]: batching whose order depends only on `(seed, epoch)`,
//!   never on torch's global RNG, so runs are reproducible across devices and processes.
//!
//! Fetching and checksumming the files is *not* done here (see `cargo xtask setup`); every
//! error on bad or missing input is a [`DataError`] naming the offending file.

mod batch;
mod dataset;
mod error;
pub mod idx;

pub use batch::{permutation, EvalBatches, ShuffledBatches};
pub use dataset::{data_dir_from_env, default_data_dir, Dataset, DatasetKind, Split, IMAGE_SIDE};
pub use error::DataError;
pub use idx::{read_idx, IdxArray};
