//! `cargo xtask ci`: the whole CI in one command, cheapest step first, stopping at the
//! first failure.
//!
//! The steps: `cargo fmt --all -- --check`; `cargo clippy --workspace --all-targets -- -D
//! warnings` and `cargo doc --workspace --no-deps` (with `RUSTDOCFLAGS=-D warnings`), both
//! with setup's libtorch; the README's test command `cargo xtask test` (the same code path
//! as the `test` subcommand, with `ci`'s arguments); the benchmarks' smoke run `cargo xtask
//! bench --quick`. Each step prints a timing line; a failure names its step and the steps
//! that did not run.

use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::Setup;

/// What a CI step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `cargo ARGS...` in the workspace root, with `env` added; `torch`: with setup's
    /// environment (libtorch, no data sets), as `test` has.
    Cargo {
        /// The arguments after `cargo`.
        args: Vec<&'static str>,
        /// Extra environment variables.
        env: Vec<(&'static str, &'static str)>,
        /// Whether the command needs libtorch (it builds `torch-sys`).
        torch: bool,
    },
    /// `cargo xtask test ARGS...`: the `test` subcommand's own code path.
    Test(Vec<OsString>),
    /// `cargo xtask bench --quick`: every benchmark case once at tiny sizes.
    BenchQuick,
}

impl Action {
    /// The command line as a person would type it, for the log.
    pub fn describe(&self) -> String {
        match self {
            Action::Cargo { args, env, .. } => {
                let mut s = String::new();
                for (k, v) in env {
                    s.push_str(&format!("{k}='{v}' "));
                }
                s.push_str("cargo ");
                s.push_str(&args.join(" "));
                s
            }
            Action::Test(args) => {
                let mut s = "cargo xtask test".to_string();
                for a in args {
                    s.push(' ');
                    s.push_str(&a.to_string_lossy());
                }
                s
            }
            Action::BenchQuick => "cargo xtask bench --quick".to_string(),
        }
    }
}

/// One CI step: a short name for messages and what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Short name (`fmt`, `clippy`, `doc`, `test`, `bench`).
    pub name: &'static str,
    /// What it runs.
    pub action: Action,
}

/// The CI steps in order, cheapest first; `test_args` go to the test step.
pub fn plan(test_args: Vec<OsString>) -> Vec<Step> {
    vec![
        Step {
            name: "fmt",
            action: Action::Cargo {
                args: vec!["fmt", "--all", "--", "--check"],
                env: vec![],
                torch: false,
            },
        },
        Step {
            name: "clippy",
            action: Action::Cargo {
                args: vec![
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
                env: vec![],
                torch: true,
            },
        },
        Step {
            name: "doc",
            action: Action::Cargo {
                args: vec!["doc", "--workspace", "--no-deps"],
                env: vec![("RUSTDOCFLAGS", "-D warnings")],
                torch: true,
            },
        },
        Step {
            name: "test",
            action: Action::Test(test_args),
        },
        Step {
            name: "bench",
            action: Action::BenchQuick,
        },
    ]
}

/// Formats a duration for the timing lines: `12.3 s`, or `4 min 05 s` from a minute on.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// Runs `steps` in order with `exec` (which returns a step's exit code), printing a timing
/// line per step to `log`; stops at the first step that fails (non-zero code or error) and
/// returns its code (1 for an error, after printing it). Returns 0 when every step passed.
pub fn run_plan(
    steps: &[Step],
    mut exec: impl FnMut(&Step) -> Result<i32>,
    log: &mut dyn std::io::Write,
) -> Result<i32> {
    let total = steps.len();
    let all = Instant::now();
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let what = step.action.describe();
        writeln!(log, "[ci] step {n}/{total} {}: {what}", step.name)?;
        let start = Instant::now();
        let result = exec(step);
        let took = fmt_duration(start.elapsed());
        let (code, why) = match result {
            Ok(0) => {
                writeln!(log, "[ci] step {n}/{total} {}: passed in {took}", step.name)?;
                continue;
            }
            Ok(code) => (code, format!("exit status {code}")),
            Err(e) => (1, format!("{e:#}")),
        };
        writeln!(log, "[ci] step {n}/{total} {}: FAILED in {took}", step.name)?;
        let skipped: Vec<&str> = steps[n..].iter().map(|s| s.name).collect();
        let skipped = if skipped.is_empty() {
            "none".to_string()
        } else {
            skipped.join(", ")
        };
        writeln!(
            log,
            "error: ci failed at step {n}/{total} `{}` (`{what}`): {why}; not run: {skipped}",
            step.name
        )?;
        return Ok(code);
    }
    writeln!(
        log,
        "[ci] all {total} steps passed in {}",
        fmt_duration(all.elapsed())
    )?;
    Ok(0)
}

/// `cargo xtask ci [ARGS...]`: runs [`plan`]`(args)`; returns the exit code.
pub fn run(test_args: Vec<OsString>) -> Result<i32> {
    // Setup (libtorch only) runs once, at the first step that needs it: not before `fmt`.
    let mut torch: Option<Setup> = None;
    let steps = plan(test_args);
    run_plan(
        &steps,
        |step| exec(step, &mut torch),
        &mut std::io::stderr(),
    )
}

/// Runs one step for real.
fn exec(step: &Step, torch: &mut Option<Setup>) -> Result<i32> {
    match &step.action {
        Action::Cargo {
            args,
            env,
            torch: needs_torch,
        } => {
            let mut cmd = Command::new(crate::cargo());
            cmd.args(args);
            for (k, v) in env {
                cmd.env(k, v);
            }
            if !needs_torch {
                cmd.current_dir(crate::workspace_root());
                let status = cmd
                    .status()
                    .with_context(|| format!("starting `{}`", step.action.describe()))?;
                return Ok(crate::util::exit_code(status));
            }
            if torch.is_none() {
                *torch = Some(crate::setup(false)?);
            }
            let s = torch.as_ref().expect("set just above");
            crate::run_with_env(&mut cmd, s)
        }
        Action::Test(args) => crate::run_tests(args.clone()),
        Action::BenchQuick => crate::bench::run(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(steps: &[Step]) -> Vec<&'static str> {
        steps.iter().map(|s| s.name).collect()
    }

    #[test]
    fn plan_is_the_documented_ci_cheapest_first() {
        let steps = plan(vec!["-p".into(), "ap-mask".into()]);
        assert_eq!(names(&steps), ["fmt", "clippy", "doc", "test", "bench"]);
        let lines: Vec<String> = steps.iter().map(|s| s.action.describe()).collect();
        assert_eq!(
            lines,
            [
                "cargo fmt --all -- --check",
                "cargo clippy --workspace --all-targets -- -D warnings",
                "RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps",
                "cargo xtask test -p ap-mask",
                "cargo xtask bench --quick",
            ]
        );
        // fmt needs no libtorch (so it runs before setup); clippy and doc build torch-sys.
        let torch: Vec<bool> = steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Cargo { torch, .. } => Some(*torch),
                _ => None,
            })
            .collect();
        assert_eq!(torch, [false, true, true]);
        // The README's test command is the `test` subcommand itself, with ci's arguments.
        assert_eq!(
            steps[3].action,
            Action::Test(vec!["-p".into(), "ap-mask".into()])
        );
    }

    /// Runs ci's plan with no test arguments, each step by `exec`: the exit code, the
    /// steps run, and the log.
    fn run_default_plan(
        mut exec: impl FnMut(&Step) -> Result<i32>,
    ) -> (i32, Vec<&'static str>, String) {
        let mut ran = vec![];
        let mut log = Vec::new();
        let code = run_plan(
            &plan(vec![]),
            |s| {
                ran.push(s.name);
                exec(s)
            },
            &mut log,
        )
        .unwrap();
        (code, ran, String::from_utf8(log).unwrap())
    }

    #[test]
    fn stops_at_the_first_failure_and_names_it() {
        let (code, ran, log) = run_default_plan(|s| Ok(if s.name == "clippy" { 101 } else { 0 }));
        assert_eq!(code, 101);
        assert_eq!(ran, ["fmt", "clippy"]);
        assert!(log.contains("[ci] step 1/5 fmt: passed in "), "{log}");
        assert!(log.contains("[ci] step 2/5 clippy: FAILED in "), "{log}");
        assert!(
            log.contains(
                "error: ci failed at step 2/5 `clippy` (`cargo clippy --workspace \
                 --all-targets -- -D warnings`): exit status 101; not run: doc, test, bench"
            ),
            "{log}"
        );
        assert!(!log.contains("all 5 steps passed"), "{log}");
    }

    #[test]
    fn an_error_in_a_step_fails_it_with_the_cause() {
        let (code, ran, log) = run_default_plan(|s| {
            if s.name == "bench" {
                anyhow::bail!("no python");
            }
            Ok(0)
        });
        assert_eq!(code, 1);
        assert_eq!(ran, ["fmt", "clippy", "doc", "test", "bench"]);
        assert!(
            log.contains(
                "step 5/5 `bench` (`cargo xtask bench --quick`): no python; not run: none"
            ),
            "{log}"
        );
    }

    #[test]
    fn all_passing_gives_zero_and_a_line_per_step() {
        let (code, _, log) = run_default_plan(|_| Ok(0));
        assert_eq!(code, 0);
        for (i, name) in ["fmt", "clippy", "doc", "test", "bench"].iter().enumerate() {
            let line = format!("[ci] step {}/5 {name}: passed in ", i + 1);
            assert!(log.contains(&line), "{line} missing from {log}");
        }
        assert!(log.contains("[ci] all 5 steps passed in "), "{log}");
        assert!(!log.contains("error"), "{log}");
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(1234)), "1.2 s");
        assert_eq!(fmt_duration(Duration::from_secs(59)), "59.0 s");
        assert_eq!(fmt_duration(Duration::from_secs(65)), "1 min 05 s");
        assert_eq!(fmt_duration(Duration::from_secs(3600)), "60 min 00 s");
    }
}
