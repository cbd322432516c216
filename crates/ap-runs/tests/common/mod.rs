//! Helpers shared by the `ap` program's integration tests.

use std::path::PathBuf;

/// The data directory `cargo xtask setup` fills; fails with the fix when MNIST is missing.
pub fn data_dir() -> PathBuf {
    let dir = ap_data::default_data_dir();
    assert!(
        dir.join("mnist").exists(),
        "MNIST is not in {}: run `cargo xtask setup`",
        dir.display()
    );
    dir
}
