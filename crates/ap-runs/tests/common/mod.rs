//! Helpers shared by the `ap` program's integration tests (each test binary uses some).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

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

/// `reproduce --grid <grid> --runs-dir <runs> --out <out>`: the start of an `ap` command
/// line.
pub fn reproduce_args<'a>(grid: &'a Path, runs: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "reproduce",
        "--grid",
        grid.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
}

/// The error a user sees: exit code 1, one `error:` line naming every needle, no panic.
pub fn assert_clean_error(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {err}"));
    for n in needles {
        assert!(line.contains(n), "`{n}` missing from: {line}");
    }
}
