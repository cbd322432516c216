//! Data sets for the pruning experiments.
//!
//! This crate owns everything between the files that `cargo xtask setup` places in the data
//! directory and the tensors a training loop consumes:
//!
//! * [`idx`]: a strict parser for the IDX format (raw or gzip) used by MNIST and Fashion-MNIST;
//! * [`Dataset`] / [`Split`]: validated, normalised image and label tensors on a device;
//! * [`cifar`]: the CIFAR-10 / CIFAR-100 binary format (loaded through [`Dataset::load`] from a
//!   folder the user downloads) and small synthetic fixtures in it for tests;
//! * [`ShuffledBatches`] / [`EvalBatches`]: batching whose order depends only on `(seed, epoch)`,
//!   never on torch's global RNG, so runs are reproducible across devices and processes;
//! * [`Augment`]: random crop + horizontal flip on the device, deterministic in `(seed, step)`.
//!
//! Fetching and checksumming the MNIST files is *not* done here (see `cargo xtask setup`); every
//! error on bad or missing input is a [`DataError`] naming the offending file.

mod augment;
mod batch;
pub mod cifar;
mod dataset;
mod error;
pub mod idx;

pub use augment::Augment;
pub use batch::{permutation, EvalBatches, ShuffledBatches};
pub use dataset::{data_dir_from_env, default_data_dir, Dataset, DatasetKind, Split, IMAGE_SIDE};
pub use error::DataError;
pub use idx::{read_idx, IdxArray};
