//! `cargo xtask`: developer tasks for the workspace.
//!
//! Installs libtorch (the pip `torch` package in a private venv) and the MNIST /
//! Fashion-MNIST data sets into a cache, prints the environment plain cargo needs, and runs
//! the test suite, the whole CI (`ci`) or the reproduction with that environment. Run
//! `cargo xtask help`.

mod archive;
mod bench;
mod checksum;
mod ci;
mod data;
#[cfg(test)]
mod drift;
mod paths;
mod torch;
mod util;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::paths::Paths;
use crate::util::{describe, exit_code, step};

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  setup [--no-data]    install libtorch (pip torch==2.11.0 in a private venv, unless LIBTORCH
                       points at one) and fetch MNIST + Fashion-MNIST, verified by sha256;
                       idempotent. --no-data skips the data sets.
  env                  print `export` lines for LIBTORCH, LD_LIBRARY_PATH and AP_DATA_DIR;
                       use as: eval \"$(cargo xtask env)\"   (run setup first)
  test [ARGS...]       setup, then `cargo test --workspace ARGS...` with that environment
  ci [ARGS...]         the whole CI, cheapest step first, stopping at the first failure with
                       the step's name; a timing line per step: (1) cargo fmt --all -- --check
                       (2) cargo clippy --workspace --all-targets -- -D warnings (3) cargo doc
                       --workspace --no-deps with RUSTDOCFLAGS='-D warnings' (2 and 3 with
                       setup's libtorch) (4) `test ARGS...` (5) `bench --quick`. .ci/run runs it
  reproduce [ARGS...]  setup, then build and run `ap reproduce ARGS...` (release build):
                       the experiment grid of a profile (smoke, quick (default), paper),
                       resuming where it stopped; writes results/<profile>/
  report [ARGS...]     `ap report ARGS...`: rebuild a profile's report from the run store
  status [ARGS...]     `ap status ARGS...`: done / running / pending / failed per run
  sweep [ARGS...]      setup, then `ap sweep ARGS...`: essential sparsity of a finished run
  export [ARGS...]     `ap export ARGS...`: a finished run for use outside (docs/export.md)
  mutants [ARGS...]    setup (no data), then `cargo mutants ARGS...` with that environment:
                       mutation testing of the exact-count code named in .cargo/mutants.toml
                       (selection, masks, AP's selection, the pruning event, drop-and-grow,
                       the masked optimizer step), each mutant against its own package's
                       tests; `--file PATH` narrows to PATH, e.g.
                       `mutants --file crates/ap-tensor/src/select.rs --jobs 1`. Builds under
                       target/mutants unless CARGO_TARGET_DIR is set or --jobs is above 1.
                       Installs cargo-mutants from crates.io (`cargo install cargo-mutants
                       --locked`) when missing. Slow (3 to 25 minutes per file on 2 cores):
                       not in CI; see docs/testing.md
  bench [--quick]      setup, then benchmark against PyTorch (release build of ap-bench and
                       bench/baselines.py with the venv python); prints the table, writes
                       target/bench/. --quick: tiny sizes, dev build, for CI smoke tests
  help                 this message

environment:
  AP_CACHE_DIR     cache root (default $XDG_CACHE_HOME/ap-prune or ~/.cache/ap-prune)
  AP_TORCH_VENV    python venv holding torch (default <cache root>/torch-2.11.0)
  AP_DATA_DIR      data directory (default <cache root>/data)
  LIBTORCH         an existing libtorch to use instead of the venv (must contain lib/)
  AP_BENCH_THREADS libtorch threads on both sides of `bench` (default 1)
";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cmd {
    Help,
    Setup {
        data: bool,
    },
    Env,
    Test(Vec<OsString>),
    /// `ci`: fmt, clippy, doc, `test` (arguments passed to it), `bench --quick`.
    Ci(Vec<OsString>),
    /// `mutants`: cargo-mutants with the tool environment, arguments passed through.
    Mutants(Vec<OsString>),
    /// `reproduce`, `report` or `status`: forwarded to the `ap` program of that name.
    Ap(&'static str, Vec<OsString>),
    /// `bench`: benchmarks against PyTorch; `quick` for tiny sizes (CI smoke test).
    Bench {
        quick: bool,
    },
}

fn parse_args(args: Vec<OsString>) -> Result<Cmd> {
    let mut it = args.into_iter();
    let Some(first) = it.next() else {
        return Ok(Cmd::Help);
    };
    let rest: Vec<OsString> = it.collect();
    let first = first.to_string_lossy().into_owned();
    let no_extra = |name: &str, rest: &[OsString]| -> Result<()> {
        if let Some(a) = rest.first() {
            bail!("`{name}` takes no argument {:?}", a.to_string_lossy());
        }
        Ok(())
    };
    match first.as_str() {
        "help" | "-h" | "--help" => Ok(Cmd::Help),
        "setup" => Ok(Cmd::Setup {
            data: !has_flag("setup", "--no-data", &rest)?,
        }),
        "env" => {
            no_extra("env", &rest)?;
            Ok(Cmd::Env)
        }
        "test" => Ok(Cmd::Test(rest)),
        "ci" => Ok(Cmd::Ci(rest)),
        "mutants" => Ok(Cmd::Mutants(rest)),
        "reproduce" => Ok(Cmd::Ap("reproduce", rest)),
        "report" => Ok(Cmd::Ap("report", rest)),
        "status" => Ok(Cmd::Ap("status", rest)),
        "sweep" => Ok(Cmd::Ap("sweep", rest)),
        "export" => Ok(Cmd::Ap("export", rest)),
        "bench" => Ok(Cmd::Bench {
            quick: has_flag("bench", "--quick", &rest)?,
        }),
        other => bail!("unknown command `{other}`"),
    }
}

/// Whether `flag`, the one option `cmd` takes, is among `rest`; anything else is an error.
fn has_flag(cmd: &str, flag: &str, rest: &[OsString]) -> Result<bool> {
    let mut found = false;
    for a in rest {
        match a.to_str() {
            Some(f) if f == flag => found = true,
            _ => bail!("unknown {cmd} option {:?}", a.to_string_lossy()),
        }
    }
    Ok(found)
}

fn main() -> ExitCode {
    let cmd = match parse_args(std::env::args_os().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(cmd) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Help => {
            print!("{USAGE}");
            Ok(0)
        }
        Cmd::Setup { data } => {
            setup(data)?;
            Ok(0)
        }
        Cmd::Env => {
            print_env()?;
            Ok(0)
        }
        Cmd::Test(args) => run_tests(args),
        Cmd::Ci(args) => ci::run(args),
        Cmd::Mutants(args) => {
            let s = setup(false)?;
            ensure_cargo_mutants()?;
            let mut cmd = Command::new(cargo());
            cmd.arg("mutants").args(&args);
            if let Some(config) = mutants_file_config(&args)? {
                // cargo-mutants adds `--file` to the config's `examine_globs`; we narrow.
                eprintln!("[xtask] --file given: mutating only those files");
                cmd.arg("--config").arg(config);
            }
            if let Some(dir) = mutants_target_dir(&args, paths::process_env("CARGO_TARGET_DIR")) {
                eprintln!("[xtask] building mutants in {}", dir.display());
                cmd.env("CARGO_TARGET_DIR", dir);
            }
            run_with_env(&mut cmd, &s)
        }
        Cmd::Ap(sub, args) => {
            // `reproduce` trains and `sweep` evaluates: they need the data sets.
            let s = setup(sub == "reproduce" || sub == "sweep")?;
            let mut build = Command::new(cargo());
            build.args(["build", "--release", "-p", "ap-runs", "--bin", "ap"]);
            let code = run_with_env(&mut build, &s)?;
            if code != 0 {
                return Ok(code);
            }
            let target = target_dir(&workspace_root(), paths::process_env("CARGO_TARGET_DIR"));
            let mut ap = Command::new(target.join("release").join("ap"));
            ap.arg(sub).args(args);
            run_with_env(&mut ap, &s)
        }
        Cmd::Bench { quick } => bench::run(quick),
    }
}

/// `cargo xtask test ARGS...` (the README's test command, also `ci`'s test step): setup,
/// then `cargo test --workspace ARGS...` with the tool environment; returns the exit code.
fn run_tests(args: Vec<OsString>) -> Result<i32> {
    let s = setup(true)?;
    let mut cmd = Command::new(cargo());
    cmd.arg("test").arg("--workspace").args(args);
    run_with_env(&mut cmd, &s)
}

/// Where `cargo mutants` is installed from when missing.
const MUTANTS_INSTALL: [&str; 3] = ["install", "cargo-mutants", "--locked"];

/// Installs cargo-mutants from crates.io unless `cargo mutants --version` already works.
fn ensure_cargo_mutants() -> Result<()> {
    let present = Command::new(cargo())
        .args(["mutants", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    eprintln!(
        "[xtask] cargo-mutants is not installed; installing it from crates.io: cargo {}",
        MUTANTS_INSTALL.join(" ")
    );
    let mut install = Command::new(cargo());
    install.args(MUTANTS_INSTALL);
    util::run_streamed(&mut install)
}

/// The target directory for `cargo mutants`' scratch copies: a persistent
/// `<root>/target/mutants`, so that libtorch's bindings and the other dependencies build
/// once across runs. `None` (cargo's default, a target directory inside each copy) when
/// the caller set `CARGO_TARGET_DIR` (cargo reads it itself) or asks for more than one job
/// (`-j N` / `--jobs N`), whose builds would otherwise wait on the one directory's lock.
fn mutants_target_dir(args: &[OsString], env_target: Option<String>) -> Option<PathBuf> {
    if env_target.is_some() || mutants_jobs(args) > 1 {
        return None;
    }
    Some(workspace_root().join("target").join("mutants"))
}

/// With `-f` / `--file` among the arguments (and no `--config` / `--no-config`): a copy of
/// `.cargo/mutants.toml` without `examine_globs`, written under `target/mutants/`, so that
/// the named files are mutated instead of being added to the default set.
fn mutants_file_config(args: &[OsString]) -> Result<Option<PathBuf>> {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let has = |long: &str, short: Option<&str>| {
        args.iter().any(|a| {
            a == long
                || a.starts_with(&format!("{long}="))
                || short.is_some_and(|s| a.starts_with(s))
        })
    };
    if !has("--file", Some("-f")) || has("--config", None) || has("--no-config", None) {
        return Ok(None);
    }
    let root = workspace_root();
    let src = root.join(".cargo").join("mutants.toml");
    let text =
        std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
    let dir = root.join("target").join("mutants");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join("mutants-file.toml");
    std::fs::write(&dest, without_examine_globs(&text)?)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(Some(dest))
}

/// A cargo-mutants config (TOML) without its `examine_globs` key.
fn without_examine_globs(config: &str) -> Result<String> {
    let mut table: toml::Table = config.parse().context("parsing .cargo/mutants.toml")?;
    table.remove("examine_globs");
    Ok(toml::to_string(&table)?)
}

/// The `-j` / `--jobs` value among cargo-mutants arguments (1 when absent; a value that is
/// not a number counts as many).
fn mutants_jobs(args: &[OsString]) -> u64 {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut jobs = 1;
    for (i, a) in args.iter().enumerate() {
        let value = match a.as_str() {
            "-j" | "--jobs" => args.get(i + 1).map(String::as_str),
            _ => a
                .strip_prefix("--jobs=")
                .or_else(|| a.strip_prefix("-j").filter(|v| !v.is_empty())),
        };
        if let Some(v) = value {
            jobs = v.parse().unwrap_or(u64::MAX);
        }
    }
    jobs
}

/// What setup produced: the locations the tools need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setup {
    /// The libtorch directory (value of `LIBTORCH`).
    libtorch: PathBuf,
    /// The data directory (value of `AP_DATA_DIR`).
    data_dir: PathBuf,
}

/// Installs what is missing (idempotent) and prints a summary.
fn setup(with_data: bool) -> Result<Setup> {
    let paths = Paths::from_process_env()?;
    step!("cache root: {}", paths.cache_root.display());
    let libtorch = torch::ensure_libtorch(&paths)?;
    if with_data {
        step!("data sets into {}", paths.data_dir.display());
        data::ensure_data(&paths)?;
    } else {
        step!("skipping the data sets (--no-data)");
    }
    let s = Setup {
        libtorch,
        data_dir: paths.data_dir,
    };
    step!("done");
    step!("  LIBTORCH    = {}", s.libtorch.display());
    step!("  AP_DATA_DIR = {}", s.data_dir.display());
    step!("for plain cargo: eval \"$(cargo xtask env)\"");
    Ok(s)
}

/// Variables removed from the environment of the tools we run.
const UNSET_VARS: &[&str] = &["LIBTORCH_USE_PYTORCH"];

/// The environment the tools need, with `LD_LIBRARY_PATH` prepended to `current_ld`.
/// Shared by `test`, `reproduce` and `env` so that all agree.
fn tool_env(s: &Setup, current_ld: Option<&str>) -> Vec<(String, String)> {
    let lib = s.libtorch.join("lib").display().to_string();
    let ld = match current_ld {
        Some(cur) if !cur.is_empty() => format!("{lib}:{cur}"),
        _ => lib,
    };
    vec![
        ("LIBTORCH".to_string(), s.libtorch.display().to_string()),
        ("LD_LIBRARY_PATH".to_string(), ld),
        ("AP_DATA_DIR".to_string(), s.data_dir.display().to_string()),
    ]
}

/// Runs `cmd` in the workspace root with the tool environment; returns its exit code.
fn run_with_env(cmd: &mut Command, s: &Setup) -> Result<i32> {
    let current_ld = paths::process_env("LD_LIBRARY_PATH");
    for (k, v) in tool_env(s, current_ld.as_deref()) {
        cmd.env(k, v);
    }
    for k in UNSET_VARS {
        cmd.env_remove(k);
    }
    cmd.current_dir(workspace_root());
    let what = describe(cmd);
    eprintln!("[xtask] running {what}");
    let status = cmd.status().with_context(|| format!("starting `{what}`"))?;
    Ok(exit_code(status))
}

/// `cargo xtask env`: prints the environment as shell code; installs nothing.
fn print_env() -> Result<()> {
    let paths = Paths::from_process_env()?;
    let libtorch = match &paths.user_libtorch {
        Some(dir) => dir.clone(),
        None => paths::installed_torch_dir(&paths).with_context(|| {
            format!(
                "libtorch is not installed in {}: run `cargo xtask setup` first",
                paths.torch_venv.display()
            )
        })?,
    };
    let missing = data::missing_files(&paths)?;
    if !missing.is_empty() {
        eprintln!(
            "warning: {} data file(s) missing or corrupt under {} (e.g. {}); run `cargo xtask setup`",
            missing.len(),
            paths.data_dir.display(),
            missing[0].display()
        );
    }
    let s = Setup {
        libtorch,
        data_dir: paths.data_dir,
    };
    print!("{}", env_script(&s));
    Ok(())
}

/// Shell code exporting [`tool_env`]; `LD_LIBRARY_PATH` keeps the shell's current value.
fn env_script(s: &Setup) -> String {
    let mut out = String::new();
    for (k, v) in tool_env(s, None) {
        if k == "LD_LIBRARY_PATH" {
            out.push_str(&format!(
                "export {k}={}\"${{{k}:+:${k}}}\"\n",
                shell_quote(&v)
            ));
        } else {
            out.push_str(&format!("export {k}={}\n", shell_quote(&v)));
        }
    }
    for k in UNSET_VARS {
        out.push_str(&format!("unset {k}\n"));
    }
    out
}

/// Quotes a string for POSIX shells (single quotes).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The cargo that runs us (`$CARGO`), else `cargo`.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// The cargo target directory: `$CARGO_TARGET_DIR` (relative to the root) or `<root>/target`.
fn target_dir(root: &Path, env_target: Option<String>) -> PathBuf {
    match env_target {
        Some(t) => root.join(t),
        None => root.join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse_args(os(&[])).unwrap(), Cmd::Help);
        assert_eq!(parse_args(os(&["help"])).unwrap(), Cmd::Help);
        assert_eq!(parse_args(os(&["--help"])).unwrap(), Cmd::Help);
        assert_eq!(
            parse_args(os(&["setup"])).unwrap(),
            Cmd::Setup { data: true }
        );
        assert_eq!(
            parse_args(os(&["setup", "--no-data"])).unwrap(),
            Cmd::Setup { data: false }
        );
        assert!(parse_args(os(&["setup", "--bogus"])).is_err());
        assert_eq!(parse_args(os(&["env"])).unwrap(), Cmd::Env);
        assert!(parse_args(os(&["env", "x"])).is_err());
        assert_eq!(
            parse_args(os(&["test", "-p", "ap-mask", "--", "--nocapture"])).unwrap(),
            Cmd::Test(os(&["-p", "ap-mask", "--", "--nocapture"]))
        );
        assert_eq!(parse_args(os(&["ci"])).unwrap(), Cmd::Ci(vec![]));
        assert_eq!(
            parse_args(os(&["ci", "-p", "ap-mask"])).unwrap(),
            Cmd::Ci(os(&["-p", "ap-mask"]))
        );
        assert_eq!(
            parse_args(os(&["reproduce", "--grid", "quick"])).unwrap(),
            Cmd::Ap("reproduce", os(&["--grid", "quick"]))
        );
        assert_eq!(
            parse_args(os(&["report", "--profile", "smoke"])).unwrap(),
            Cmd::Ap("report", os(&["--profile", "smoke"]))
        );
        assert_eq!(
            parse_args(os(&["status"])).unwrap(),
            Cmd::Ap("status", vec![])
        );
        assert_eq!(
            parse_args(os(&["sweep", "runs/r"])).unwrap(),
            Cmd::Ap("sweep", os(&["runs/r"]))
        );
        assert_eq!(
            parse_args(os(&["export", "runs/r", "--format", "semi-structured"])).unwrap(),
            Cmd::Ap("export", os(&["runs/r", "--format", "semi-structured"]))
        );
        assert_eq!(
            parse_args(os(&["bench", "--quick"])).unwrap(),
            Cmd::Bench { quick: true }
        );
        assert!(parse_args(os(&["bench", "--fast"])).is_err());
        assert_eq!(
            parse_args(os(&["mutants", "--file", "crates/ap-tensor/src/select.rs"])).unwrap(),
            Cmd::Mutants(os(&["--file", "crates/ap-tensor/src/select.rs"]))
        );
        assert_eq!(parse_args(os(&["mutants"])).unwrap(), Cmd::Mutants(vec![]));
        let err = parse_args(os(&["frobnicate"])).unwrap_err().to_string();
        assert!(err.contains("frobnicate"), "{err}");
    }

    fn setup_fixture() -> Setup {
        Setup {
            libtorch: PathBuf::from("/c/venv/lib/python3.11/site-packages/torch"),
            data_dir: PathBuf::from("/c/data"),
        }
    }

    #[test]
    fn tool_env_prepends_torch_lib() {
        let s = setup_fixture();
        let lib = "/c/venv/lib/python3.11/site-packages/torch/lib";
        let env = tool_env(&s, Some("/usr/local/lib"));
        assert_eq!(
            env,
            vec![
                (
                    "LIBTORCH".to_string(),
                    "/c/venv/lib/python3.11/site-packages/torch".to_string()
                ),
                (
                    "LD_LIBRARY_PATH".to_string(),
                    format!("{lib}:/usr/local/lib")
                ),
                ("AP_DATA_DIR".to_string(), "/c/data".to_string()),
            ]
        );
        assert_eq!(tool_env(&s, None)[1].1, lib);
        assert_eq!(tool_env(&s, Some(""))[1].1, lib);
    }

    #[test]
    fn env_script_is_shell_code() {
        let script = env_script(&setup_fixture());
        assert!(script.contains("export LIBTORCH='/c/venv/lib/python3.11/site-packages/torch'\n"));
        assert!(script.contains(
            "export LD_LIBRARY_PATH='/c/venv/lib/python3.11/site-packages/torch/lib'\"${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\"\n"
        ));
        assert!(script.contains("export AP_DATA_DIR='/c/data'\n"));
        assert!(script.contains("unset LIBTORCH_USE_PYTORCH\n"));
        // Round trip through a real shell.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "LD_LIBRARY_PATH=/x; {script} printf '%s|%s|%s|%s' \"$LIBTORCH\" \"$LD_LIBRARY_PATH\" \"$AP_DATA_DIR\" \"${{LIBTORCH_USE_PYTORCH-unset}}\""
            ))
            .env("LIBTORCH_USE_PYTORCH", "1")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/c/venv/lib/python3.11/site-packages/torch|/c/venv/lib/python3.11/site-packages/torch/lib:/x|/c/data|unset"
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn target_dir_honours_env() {
        let root = Path::new("/ws");
        assert_eq!(target_dir(root, None), PathBuf::from("/ws/target"));
        assert_eq!(target_dir(root, Some("/t".into())), PathBuf::from("/t"));
        assert_eq!(
            target_dir(root, Some("out".into())),
            PathBuf::from("/ws/out")
        );
    }

    #[test]
    fn mutants_build_in_one_persistent_dir_unless_parallel() {
        let dir = Some(workspace_root().join("target").join("mutants"));
        assert_eq!(mutants_target_dir(&os(&[]), None), dir);
        assert_eq!(
            mutants_target_dir(&os(&["--file", "x.rs", "--jobs", "1"]), None),
            dir
        );
        assert_eq!(mutants_target_dir(&os(&["-j1"]), None), dir);
        assert_eq!(mutants_target_dir(&os(&["--jobs", "2"]), None), None);
        assert_eq!(mutants_target_dir(&os(&["--jobs=3"]), None), None);
        assert_eq!(mutants_target_dir(&os(&["-j", "4"]), None), None);
        assert_eq!(mutants_target_dir(&os(&[]), Some("/t".into())), None);
    }

    #[test]
    fn file_narrowing_drops_only_the_default_set() {
        let cfg = "examine_globs = [\"a.rs\", \"b.rs\"]\ntest_workspace = false\ntimeout_multiplier = 4.0\n";
        let out: toml::Table = without_examine_globs(cfg).unwrap().parse().unwrap();
        assert!(!out.contains_key("examine_globs"));
        assert_eq!(out["test_workspace"], toml::Value::Boolean(false));
        assert_eq!(out["timeout_multiplier"], toml::Value::Float(4.0));
        // the workspace's own config parses and names the six files
        let own = std::fs::read_to_string(workspace_root().join(".cargo/mutants.toml")).unwrap();
        let own: toml::Table = own.parse().unwrap();
        assert_eq!(own["examine_globs"].as_array().unwrap().len(), 6);
        assert!(mutants_file_config(&os(&["--jobs", "1"]))
            .unwrap()
            .is_none());
        assert!(mutants_file_config(&os(&["-f", "x.rs", "--no-config"]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn workspace_root_has_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
