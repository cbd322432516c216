//! Tests that need something a machine may lack (a data set, Slurm): such a test never
//! passes silently. Where the prerequisite is missing it either fails or prints
//! `SKIPPED <test>: <why> …` on stderr (past the test harness's capture, so the line shows
//! in a passing `cargo test` too), as a switch says:
//!
//! | switch              | prerequisite                                   | unset   |
//! |---------------------|------------------------------------------------|---------|
//! | `AP_REQUIRE_DATA`   | MNIST, Fashion-MNIST (`cargo xtask setup`)     | fails   |
//! | `AP_REQUIRE_CIFAR`  | CIFAR-10/100 binary version (in no registry)   | skips   |
//! | `AP_REQUIRE_SLURM`  | root and Slurm's daemons (`.ci/run` installs)  | skips   |
//!
//! `<switch>=1` makes a missing prerequisite a failure, `<switch>=0` a skip.

use std::io::Write as _;

/// What a test does about a missing prerequisite when its switch is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnset {
    /// Fail (what `cargo xtask setup` installs).
    Fail,
    /// Skip, saying why.
    Skip,
}

/// Whether a missing prerequisite is a failure: `switch` is `1` (yes), `0` (no) or unset
/// (`unset` decides). Any other value is an error, so a misspelt switch cannot skip.
pub fn required(switch: &str, unset: WhenUnset) -> bool {
    match std::env::var(switch).as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        Err(std::env::VarError::NotPresent) => unset == WhenUnset::Fail,
        Ok(other) => {
            panic!("{switch}={other}: expected 1 (a missing prerequisite fails) or 0 (it skips)")
        }
        Err(e) => panic!("{switch}: {e}"),
    }
}

/// `test` cannot run here because of `why`: panics when the prerequisite is required (see
/// [`required`]), else prints `SKIPPED <test>: <why>` on stderr and returns; the caller
/// then returns.
pub fn missing_prerequisite(test: &str, why: &str, switch: &str, unset: WhenUnset) {
    if required(switch, unset) {
        let because = if std::env::var_os(switch).is_some() {
            format!("{switch}=1")
        } else {
            format!("a failure unless {switch}=0")
        };
        panic!("{test}: {why} ({because})");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (set {switch}=1 to make this a failure)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_decides_and_unset_falls_back() {
        // A name nothing else sets; this test alone touches it.
        let var = "AP_TESTKIT_PREREQ_SELFTEST";
        std::env::remove_var(var);
        assert!(required(var, WhenUnset::Fail));
        assert!(!required(var, WhenUnset::Skip));
        std::env::set_var(var, "1");
        assert!(required(var, WhenUnset::Skip));
        std::env::set_var(var, "0");
        assert!(!required(var, WhenUnset::Fail));
        missing_prerequisite("selftest", "nothing", var, WhenUnset::Fail); // skips, returns
        std::env::set_var(var, "yes");
        assert!(std::panic::catch_unwind(|| required(var, WhenUnset::Skip)).is_err());
        std::env::set_var(var, "1");
        assert!(std::panic::catch_unwind(|| {
            missing_prerequisite("selftest", "nothing", var, WhenUnset::Skip)
        })
        .is_err());
        std::env::remove_var(var);
    }
}
