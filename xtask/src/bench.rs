//! `cargo xtask bench`: benchmarks against PyTorch, each against a baseline measured in
//! the same run on the same machine.
//!
//! The Rust side is the `ap-bench` binary (crate `crates/ap-bench`), the PyTorch side
//! `bench/baselines.py`, run with the venv python that `setup` installs (the same
//! libtorch build the Rust side links). Both take the same arguments for a case and print
//! JSON lines `{"case", "key", "impl", "unit", "samples", "threads", "note"}`. Each case
//! runs in its own processes, Rust and Python alternately for a number of rounds, so
//! that load from other work on a shared machine falls on both sides; the samples of all
//! rounds are pooled and the table compares medians.
//!
//! xtask never links tch: it builds `ap-bench` with cargo and runs it with the same
//! environment as `test` and `reproduce`. Results go to stdout (a Markdown report) and to
//! `<target>/bench/` (`report.md`, `results.jsonl`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::paths::{self, Paths};
use crate::util::describe;
use crate::Setup;

/// The glibc malloc settings of the training processes that `ap reproduce` starts (a copy
/// of `ap_runs::runner::MALLOC_TUNABLES`; xtask does not link the library crates).
const MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=268435456";

/// Threads for libtorch on both sides unless `AP_BENCH_THREADS` says otherwise. One, as
/// `ap reproduce` runs one thread per process, and because a shared 2-core machine gives
/// steadier single-thread numbers.
const DEFAULT_THREADS: u32 = 1;

/// Which program runs a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Rust,
    Python,
}

/// One benchmark case: the arguments both programs get, and whether PyTorch has it.
#[derive(Debug, Clone, PartialEq)]
struct Case {
    args: Vec<String>,
    python: bool,
}

fn case(args: &str, python: bool) -> Case {
    Case {
        args: args.split_whitespace().map(str::to_string).collect(),
        python,
    }
}

/// The cases and their sizes. Full sizes keep `cargo xtask bench` to minutes on 2 cores
/// (Conv-2 and ResNet-20 steps take ~0.1–0.5 s on one thread, so they get few steps);
/// quick sizes only prove that every case runs.
fn cases(quick: bool) -> Vec<Case> {
    let pick = |full: &str, tiny: &str| {
        if quick {
            tiny.to_string()
        } else {
            full.to_string()
        }
    };
    let lenet = pick(
        "--steps 200 --reps 5 --warmup 20",
        "--steps 2 --reps 1 --warmup 1",
    );
    let conv2 = pick(
        "--steps 10 --reps 3 --warmup 2",
        "--steps 1 --reps 1 --warmup 1",
    );
    // Conv-2 and ResNet-20 run channels-last on the Rust side (`train.channels_last`,
    // measured faster on these CPUs); the PyTorch baselines stay NCHW, its default.
    let conv2 = format!("{conv2} --channels-last");
    let mut v = vec![];
    for (model, sizes) in [("lenet300-100", &lenet), ("conv2", &conv2)] {
        for density in ["1", "0.1"] {
            v.push(case(
                &format!("train --model {model} --density {density} --batch 60 {sizes}"),
                true,
            ));
        }
        v.push(case(
            &format!("mask-overhead --model {model} --density 0.1 --batch 60 {sizes}"),
            false,
        ));
    }
    v.push(case(
        &format!(
            "dnr-eval --model lenet300-100 --batch 1000 {}",
            pick("--samples 10000 --reps 5", "--samples 500 --reps 1")
        ),
        false,
    ));
    v.push(case(
        &format!(
            "dnr-eval --model conv2 --batch 1000 {}",
            pick("--samples 1000 --reps 3", "--samples 60 --reps 1")
        ),
        false,
    ));
    v.push(case(
        &format!(
            "select --fraction 0.2 {}",
            pick("--shrink 1 --reps 5", "--shrink 32 --reps 1")
        ),
        true,
    ));
    v.push(case(
        &format!(
            "resnet-step {}",
            pick(
                "--batch 128 --steps 3 --reps 3 --warmup 1 --channels-last",
                "--batch 8 --steps 1 --reps 1 --warmup 1 --channels-last"
            )
        ),
        true,
    ));
    v.push(case(
        &format!(
            "imp-memory --model lenet300-100 --batch 60 --rate 0.2 {}",
            pick("--steps 500", "--steps 10")
        ),
        true,
    ));
    // Inference on IMP tickets (± AP) from the run store `runs/` (grids/compact.toml), or
    // synthetic masks where it has none: passes per sample and samples per model and batch.
    for model in ["lenet300-100", "lenet5"] {
        for density in ["0.1", "0.02", "0.01"] {
            for batch in [1, 1000] {
                if quick && density != "0.02" {
                    continue;
                }
                let sizes = match (quick, model, batch) {
                    (true, ..) => "--iters 1 --reps 1",
                    (false, "lenet300-100", 1) => "--iters 200 --reps 5",
                    (false, "lenet300-100", _) => "--iters 10 --reps 5",
                    (false, _, 1) => "--iters 50 --reps 5",
                    (false, ..) => "--iters 2 --reps 3",
                };
                v.push(case(
                    &format!("infer --model {model} --density {density} --batch {batch} {sizes}"),
                    true,
                ));
            }
        }
    }
    v
}

/// A measured series, as printed by either program.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    case: String,
    key: String,
    imp: String,
    unit: String,
    samples: Vec<f64>,
    threads: u32,
    note: String,
}

/// A row of the comparison table: `num / den` against a target ratio (none: for information).
#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    what: String,
    num: (String, &'static str),
    den: (String, &'static str),
    target: Option<f64>,
}

fn cmp(
    what: &str,
    num: (&str, &'static str),
    den: (&str, &'static str),
    target: Option<f64>,
) -> Comparison {
    Comparison {
        what: what.to_string(),
        num: (num.0.to_string(), num.1),
        den: (den.0.to_string(), den.1),
        target,
    }
}

/// The targets of issues "benchmarks" and "throughput" (Conv-2 and ResNet-20 steps
/// ≤ 0.85× PyTorch's NCHW step, masked/unmasked ≤ 1.03×).
fn comparisons() -> Vec<Comparison> {
    const MODELS: [(&str, &str, f64); 2] = [
        ("lenet300-100", "LeNet-300-100", 0.8),
        ("conv2", "Conv-2 (ours channels-last, PyTorch NCHW)", 0.85),
    ];
    let mut v = vec![];
    for (model, label, target) in MODELS {
        for (variant, what) in [("dense", "dense"), ("masked", "10% density, masked")] {
            let key = format!("train/{model}/{variant}");
            v.push(cmp(
                &format!("{label} epoch, {what}: Rust / PyTorch"),
                (&key, "rust"),
                (&key, "pytorch"),
                Some(target),
            ));
        }
    }
    // Rust against Rust, per model: (what, case, numerator, denominator, target).
    #[rustfmt::skip]
    let rust_vs_rust = [
        ("step, masked / unmasked", "step", "masked", "unmasked", 1.03),
        ("evaluation, DNR probe / plain", "eval", "probed", "plain", 1.10),
    ];
    for (what, case, num, den, target) in rust_vs_rust {
        for (model, label) in [("lenet300-100", "LeNet-300-100"), ("conv2", "Conv-2")] {
            v.push(cmp(
                &format!("{label} {what} (Rust)"),
                (&format!("{case}/{model}/{num}"), "rust"),
                (&format!("{case}/{model}/{den}"), "rust"),
                Some(target),
            ));
        }
    }
    v.push(cmp(
        "exact-count selection (VGG-19 shapes): ours / torch.kthvalue",
        ("select/ours", "rust"),
        ("select/kthvalue", "pytorch"),
        Some(1.0),
    ));
    v.push(cmp(
        "exact-count selection (VGG-19 shapes): ours / torch.topk",
        ("select/ours", "rust"),
        ("select/topk", "pytorch"),
        None,
    ));
    v.push(cmp(
        "ResNet-20 training step (ours channels-last, PyTorch NCHW): Rust / PyTorch",
        ("resnet20/step", "rust"),
        ("resnet20/step", "pytorch"),
        Some(0.85),
    ));
    v.push(cmp(
        "LeNet-300-100 inference at ≈ 2% density (IMP ticket), batch 1,000: fastest exact variant / PyTorch dense",
        ("infer/lenet300-100/d0.02/b1000/fastest-exact", "rust"),
        ("infer/lenet300-100/d0.02/b1000/dense", "pytorch"),
        Some(1.0 / 3.0),
    ));
    v.push(cmp(
        "peak RSS of an IMP round (LeNet-300-100): Rust / PyTorch",
        ("imp/peak", "rust"),
        ("imp/peak", "pytorch"),
        Some(1.0),
    ));
    v
}

/// `cargo xtask bench [--quick]`: returns the exit code (non-zero when a build or a case failed).
pub fn run(quick: bool) -> Result<i32> {
    let s = crate::setup(true)?;
    let paths = Paths::from_process_env()?;
    let python = venv_python(&paths)?;
    let torch_version = torch_version(&python)?;
    let threads = match paths::process_env("AP_BENCH_THREADS") {
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|&t| t >= 1)
            .with_context(|| format!("AP_BENCH_THREADS={v} is not a positive integer"))?,
        None => DEFAULT_THREADS,
    };
    let root = crate::workspace_root();
    let script = root.join("bench").join("baselines.py");
    if !script.is_file() {
        bail!("{} is missing", script.display());
    }

    // Quick mode builds the dev profile, which shares the compiled torch-sys with tests.
    let mut build = Command::new(crate::cargo());
    build.args(["build", "-p", "ap-bench", "--bin", "ap-bench"]);
    if !quick {
        build.arg("--release");
    }
    let code = crate::run_with_env(&mut build, &s)?;
    if code != 0 {
        return Ok(code);
    }
    let target = crate::target_dir(&root, paths::process_env("CARGO_TARGET_DIR"));
    let bin = target
        .join(if quick { "debug" } else { "release" })
        .join("ap-bench");

    let rounds = if quick { 1 } else { 2 };
    let mut all: Vec<Series> = vec![];
    let mut failures: Vec<String> = vec![];
    let start = std::time::Instant::now();
    for c in cases(quick) {
        for _ in 0..rounds {
            let mut sides = vec![Side::Rust];
            if c.python {
                sides.push(Side::Python);
            }
            for side in sides {
                let mut cmd = match side {
                    Side::Rust => {
                        // What `ap reproduce` gives each run (ap_runs::runner::MALLOC_TUNABLES):
                        // glibc keeps large freed blocks instead of unmapping them every step.
                        let mut r = Command::new(&bin);
                        if paths::process_env("GLIBC_TUNABLES").is_none() {
                            r.env("GLIBC_TUNABLES", MALLOC_TUNABLES);
                        }
                        r
                    }
                    Side::Python => {
                        let mut p = Command::new(&python);
                        p.arg(&script);
                        p
                    }
                };
                cmd.args(&c.args).args(["--threads", &threads.to_string()]);
                match run_case(&mut cmd, &s) {
                    Ok(series) => all.extend(series),
                    Err(e) => {
                        eprintln!("[bench] error: {e:#}");
                        failures.push(format!("{e:#}"));
                    }
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();

    let merged = merge(&all);
    let meta = Meta {
        quick,
        threads,
        torch_version,
        libtorch: s.libtorch.display().to_string(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpu_model(),
        date: utc_now(),
        elapsed_s: elapsed,
        rounds,
    };
    let report = render(&meta, &merged, &comparisons(), &failures);
    print!("{report}");
    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    std::fs::write(out_dir.join("report.md"), &report)?;
    let lines: String = all.iter().map(|s| to_json(s) + "\n").collect();
    std::fs::write(out_dir.join("results.jsonl"), lines)?;
    eprintln!("[bench] wrote {}", out_dir.join("report.md").display());
    if failures.is_empty() {
        Ok(0)
    } else {
        eprintln!("[bench] {} case run(s) failed", failures.len());
        Ok(1)
    }
}

/// The venv python that holds torch, with a clear error when setup has not made it.
fn venv_python(paths: &Paths) -> Result<PathBuf> {
    let python = paths.torch_venv.join("bin").join("python");
    if !python.is_file() {
        bail!(
            "the PyTorch baselines need the venv python {}, which does not exist: run `cargo xtask setup` \
             (with LIBTORCH set, setup skips the venv; unset it or point AP_TORCH_VENV at a venv with torch)",
            python.display()
        );
    }
    Ok(python)
}

fn torch_version(python: &Path) -> Result<String> {
    let out = Command::new(python)
        .args([
            "-W",
            "ignore",
            "-c",
            "import torch; print(torch.__version__)",
        ])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} cannot import torch: run `cargo xtask setup`",
            python.display()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs one case program with the tool environment; its stdout must be JSON lines.
fn run_case(cmd: &mut Command, s: &Setup) -> Result<Vec<Series>> {
    let current_ld = paths::process_env("LD_LIBRARY_PATH");
    for (k, v) in crate::tool_env(s, current_ld.as_deref()) {
        cmd.env(k, v);
    }
    for k in crate::UNSET_VARS {
        cmd.env_remove(k);
    }
    cmd.current_dir(crate::workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let what = describe(cmd);
    eprintln!("[bench] {what}");
    let out = cmd.output().with_context(|| format!("starting `{what}`"))?;
    if !out.status.success() {
        bail!("`{what}` failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let series: Vec<Series> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_series)
        .collect::<Result<_>>()
        .with_context(|| format!("reading the output of `{what}`"))?;
    if series.is_empty() {
        bail!("`{what}` printed no results");
    }
    Ok(series)
}

/// Pools the samples of series with the same key and implementation (several rounds).
fn merge(all: &[Series]) -> BTreeMap<(String, String), Series> {
    let mut m: BTreeMap<(String, String), Series> = BTreeMap::new();
    for s in all {
        m.entry((s.key.clone(), s.imp.clone()))
            .and_modify(|e| e.samples.extend(&s.samples))
            .or_insert_with(|| s.clone());
    }
    m
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// A value with 3–4 significant digits.
fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// The inference table: per model, ticket density and batch, PyTorch's dense forward pass
/// and each variant's speed-up over it (its time ÷ the variant's), with the multiply-adds
/// per sample of the dense, compacted and sparse (non-zero) networks. Empty without
/// inference series.
fn render_inference(series: &BTreeMap<(String, String), Series>) -> String {
    let get = |key: &str, imp: &str| {
        series
            .get(&(key.to_string(), imp.to_string()))
            .map(|s| median(&s.samples))
    };
    // (model, density, batch) of every PyTorch dense inference series, in key order.
    let mut groups: Vec<(String, String, String)> = series
        .keys()
        .filter(|(k, imp)| imp == "pytorch" && k.starts_with("infer/") && k.ends_with("/dense"))
        .filter_map(|(k, _)| {
            let parts: Vec<&str> = k.split('/').collect();
            (parts.len() == 5).then(|| (parts[1].into(), parts[2].into(), parts[3].into()))
        })
        .collect();
    groups.sort_by(|a, b| {
        let num = |s: &str| s[1..].parse::<f64>().unwrap_or(f64::NAN);
        (a.0.clone(), -num(&a.1), num(&a.2))
            .partial_cmp(&(b.0.clone(), -num(&b.1), num(&b.2)))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if groups.is_empty() {
        return String::new();
    }
    let mut r = String::from(
        "\nInference (forward pass, evaluation): PyTorch's dense network, and each variant's speed-up \
         over it (× = PyTorch dense time ÷ variant time; > 1 is faster). Rust variants: dense (unpruned), \
         masked (zeros multiplied), compact (ap-compact's exact smaller network), CSR (linear layers as \
         sparse CSR), compact+CSR. MACs: multiply-adds per sample, dense → compact (non-zero: what a \
         sparse kernel multiplies).\n\n\
         | model | ticket | density | batch | PyTorch dense | Rust dense | masked | compact | CSR | compact+CSR | MACs dense → compact (non-zero) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (model, density, batch) in groups {
        let base = format!("infer/{model}/{density}/{batch}");
        let Some(torch) = get(&format!("{base}/dense"), "pytorch") else {
            continue;
        };
        let speedup = |key: String| {
            get(&key, "rust").map_or("—".to_string(), |t| format!("{:.2}×", torch / t))
        };
        for (prefix, ticket) in [(base.clone(), "IMP"), (format!("{base}/ap"), "IMP+AP")] {
            let Some(d) = series.get(&(format!("{prefix}/density"), "rust".to_string())) else {
                continue;
            };
            let ticket = if d.note.starts_with("synthetic") {
                "synthetic"
            } else {
                ticket
            };
            let d = median(&d.samples);
            let count =
                |what: &str| get(&format!("{prefix}/macs/{what}"), "rust").map_or(0.0, |v| v);
            r.push_str(&format!(
                "| {model} | {ticket} | {:.2}% | {} | {} ms | {} | {} | {} | {} | {} | {:.0} → {:.0} ({:.0}) |\n",
                100.0 * d,
                &batch[1..],
                fmt_value(torch * 1e3),
                speedup(format!("{base}/dense")),
                speedup(format!("{prefix}/masked")),
                speedup(format!("{prefix}/compact")),
                speedup(format!("{prefix}/csr")),
                speedup(format!("{prefix}/compact-csr")),
                count("dense"),
                count("compact"),
                count("nonzero"),
            ));
        }
    }
    r
}

/// What the report says about the run.
#[derive(Debug, Clone)]
struct Meta {
    quick: bool,
    threads: u32,
    torch_version: String,
    libtorch: String,
    cpus: usize,
    cpu_model: String,
    date: String,
    elapsed_s: f64,
    rounds: usize,
}

fn render(
    meta: &Meta,
    series: &BTreeMap<(String, String), Series>,
    comps: &[Comparison],
    failures: &[String],
) -> String {
    let mut r = String::new();
    r.push_str(&format!(
        "# cargo xtask bench{}\n\n",
        if meta.quick { " --quick" } else { "" }
    ));
    r.push_str(&format!(
        "{}; {} CPUs ({}); {} libtorch thread(s) on both sides; PyTorch {} (venv python), \
         Rust: tch 0.24.0 on {}; {} round(s) per case, Rust and PyTorch alternating; {:.0} s.\n\n",
        meta.date,
        meta.cpus,
        meta.cpu_model,
        meta.threads,
        meta.torch_version,
        meta.libtorch,
        meta.rounds,
        meta.elapsed_s
    ));
    if meta.quick {
        r.push_str("Quick mode: tiny sizes and a dev build; the numbers prove the cases run and mean nothing else.\n\n");
    }
    r.push_str("| comparison | ours (median) | baseline (median) | ratio | target | result | how (ours) |\n");
    r.push_str("|---|---:|---:|---:|---:|---|---|\n");
    for c in comps {
        let num = series.get(&(c.num.0.clone(), c.num.1.to_string()));
        let den = series.get(&(c.den.0.clone(), c.den.1.to_string()));
        match (num, den) {
            (Some(n), Some(d)) => {
                let (a, b) = (median(&n.samples), median(&d.samples));
                let ratio = a / b;
                let (target, result) = match c.target {
                    Some(t) if ratio <= t => (format!("≤ {t:.2}×"), "pass"),
                    Some(t) => (format!("≤ {t:.2}×"), "**miss**"),
                    None => ("—".to_string(), "(info)"),
                };
                r.push_str(&format!(
                    "| {} | {} {} | {} {} | {:.2}× | {} | {} | {} |\n",
                    c.what,
                    fmt_value(a),
                    n.unit,
                    fmt_value(b),
                    d.unit,
                    ratio,
                    target,
                    result,
                    n.note
                ));
            }
            _ => r.push_str(&format!(
                "| {} | {} | {} | — | — | **error: no result** | |\n",
                c.what,
                if num.is_some() { "ok" } else { "missing" },
                if den.is_some() { "ok" } else { "missing" },
            )),
        }
    }
    r.push_str(&render_inference(series));
    r.push_str(
        "\nEvery series (median of all samples; parts are timed inside the same steps):\n\n",
    );
    r.push_str("| series | impl | median | unit | n | min – max | how |\n");
    r.push_str("|---|---|---:|---|---:|---|---|\n");
    for s in series.values() {
        let lo = s.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = s.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        r.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} – {} | {} |\n",
            s.key,
            s.imp,
            fmt_value(median(&s.samples)),
            s.unit,
            s.samples.len(),
            fmt_value(lo),
            fmt_value(hi),
            s.note
        ));
    }
    if !failures.is_empty() {
        r.push_str("\nFailed runs:\n\n");
        for f in failures {
            r.push_str(&format!("- {f}\n"));
        }
    }
    r
}

/// `model name` of the first CPU in /proc/cpuinfo (what `lscpu` shows).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        t / 3600,
        t % 3600 / 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

// ------------------------------------------------------------------ JSON
// xtask keeps its dependencies to std and the archive/hash crates, so the flat JSON the
// two benchmark programs print is read by this small parser.

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<()> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            bail!("expected `{}` at byte {}", c as char, self.i)
        }
    }

    fn value(&mut self) -> Result<Json> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => Ok(Json::Obj(self.items(b'}', |p| {
                p.ws();
                let k = p.string()?;
                p.eat(b':')?;
                Ok((k, p.value()?))
            })?)),
            Some(b'[') => Ok(Json::Arr(self.items(b']', Self::value)?)),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Json::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Json::Bool(false))
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(Json::Null)
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'
                    )
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i])?;
                Ok(Json::Num(
                    text.parse()
                        .with_context(|| format!("bad number `{text}`"))?,
                ))
            }
            _ => bail!(
                "unexpected input at byte {} (NaN and Infinity are not JSON)",
                self.i
            ),
        }
    }

    /// The items of an object or array whose opening byte is at `self.i`, each read by
    /// `item`, up to and past `close`.
    fn items<T>(&mut self, close: u8, item: impl Fn(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        self.i += 1;
        let mut items = vec![];
        self.ws();
        if self.s.get(self.i) == Some(&close) {
            self.i += 1;
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(&c) if c == close => {
                    self.i += 1;
                    return Ok(items);
                }
                _ => bail!("expected `,` or `{}` at byte {}", close as char, self.i),
            }
        }
    }

    fn string(&mut self) -> Result<String> {
        if self.s.get(self.i) != Some(&b'"') {
            bail!("expected a string at byte {}", self.i);
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while self.i < self.s.len() && !matches!(self.s[self.i], b'"' | b'\\') {
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i])?);
            match self.s.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let esc = *self.s.get(self.i + 1).context("unterminated escape")?;
                    self.i += 2;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).context("short \\u escape")?;
                            let code = u32::from_str_radix(std::str::from_utf8(hex)?, 16)?;
                            self.i += 4;
                            // Surrogate pairs do not occur in our output; keep a marker.
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        other => bail!("bad escape `\\{}`", other as char),
                    }
                }
                _ => bail!("unterminated string"),
            }
        }
    }
}

fn parse_json(line: &str) -> Result<Json> {
    let mut p = Parser {
        s: line.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        bail!("trailing input at byte {}", p.i);
    }
    Ok(v)
}

/// Reads one result line; every field is required and samples must be finite.
fn parse_series(line: &str) -> Result<Series> {
    let Json::Obj(fields) = parse_json(line).with_context(|| format!("not JSON: {line}"))? else {
        bail!("not a JSON object: {line}");
    };
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v)
            .with_context(|| format!("no `{k}` in {line}"))
    };
    let text = |k: &str| -> Result<String> {
        match get(k)? {
            Json::Str(s) => Ok(s.clone()),
            other => bail!("`{k}` is not a string: {other:?}"),
        }
    };
    let samples = match get("samples")? {
        Json::Arr(items) => items
            .iter()
            .map(|v| match v {
                Json::Num(x) if x.is_finite() => Ok(*x),
                other => bail!("sample {other:?} is not a finite number in {line}"),
            })
            .collect::<Result<Vec<f64>>>()?,
        other => bail!("`samples` is not an array: {other:?}"),
    };
    if samples.is_empty() {
        bail!("no samples in {line}");
    }
    let threads = match get("threads")? {
        Json::Num(t) if *t >= 1.0 && t.fract() == 0.0 => *t as u32,
        other => bail!("`threads` is not a positive integer: {other:?}"),
    };
    let imp = text("impl")?;
    if imp != "rust" && imp != "pytorch" {
        bail!("`impl` must be rust or pytorch, not {imp:?}");
    }
    Ok(Series {
        case: text("case")?,
        key: text("key")?,
        imp,
        unit: text("unit")?,
        samples,
        threads,
        note: text("note")?,
    })
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A series as one JSON line (for `results.jsonl`).
fn to_json(s: &Series) -> String {
    let samples: Vec<String> = s.samples.iter().map(|v| format!("{v:?}")).collect();
    format!(
        "{{\"case\":{},\"key\":{},\"impl\":{},\"unit\":{},\"samples\":[{}],\"threads\":{},\"note\":{}}}",
        json_string(&s.case),
        json_string(&s.key),
        json_string(&s.imp),
        json_string(&s.unit),
        samples.join(","),
        s.threads,
        json_string(&s.note)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_programs_output() {
        // serde_json (ap-bench) and Python's json.dumps (spaces after separators).
        let rust = r#"{"case":"train","key":"train/conv2/dense","impl":"rust","unit":"s/epoch","samples":[1.5,2e-3,3],"threads":1,"note":"a \"b\" \\ \u00e9"}"#;
        let py = r#"{"case": "select", "key": "select/topk", "impl": "pytorch", "unit": "s", "samples": [0.25], "threads": 2, "note": ""}"#;
        let r = parse_series(rust).unwrap();
        assert_eq!(r.key, "train/conv2/dense");
        assert_eq!(r.samples, vec![1.5, 0.002, 3.0]);
        assert_eq!(r.note, "a \"b\" \\ é");
        let p = parse_series(py).unwrap();
        assert_eq!(
            (p.imp.as_str(), p.threads, p.samples[0]),
            ("pytorch", 2, 0.25)
        );
        // Round trip through our writer.
        assert_eq!(parse_series(&to_json(&r)).unwrap(), r);
    }

    #[test]
    fn rejects_bad_lines() {
        for bad in [
            "not json",
            r#"{"case":"x"}"#,
            r#"{"case":"x","key":"k","impl":"rust","unit":"s","samples":[NaN],"threads":1,"note":""}"#,
            r#"{"case":"x","key":"k","impl":"rust","unit":"s","samples":[],"threads":1,"note":""}"#,
            r#"{"case":"x","key":"k","impl":"java","unit":"s","samples":[1],"threads":1,"note":""}"#,
            r#"{"case":"x","key":"k","impl":"rust","unit":"s","samples":[1],"threads":1,"note":""} x"#,
        ] {
            assert!(parse_series(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn medians_and_merging() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let s = |imp: &str, v: f64| Series {
            case: "c".into(),
            key: "k".into(),
            imp: imp.into(),
            unit: "s".into(),
            samples: vec![v],
            threads: 1,
            note: String::new(),
        };
        let m = merge(&[s("rust", 1.0), s("pytorch", 5.0), s("rust", 3.0)]);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[&("k".to_string(), "rust".to_string())].samples,
            vec![1.0, 3.0]
        );
    }

    #[test]
    fn every_comparison_has_its_cases() {
        // The keys the table pairs must be produced by some case of both sizes; a renamed
        // key would otherwise only show up as "no result" after a full run.
        for quick in [false, true] {
            let subcommands: Vec<String> = cases(quick).iter().map(|c| c.args[0].clone()).collect();
            for c in comparisons() {
                for (key, imp) in [&c.num, &c.den] {
                    let sub = match key.split('/').next().unwrap() {
                        "train" => "train",
                        "step" => "mask-overhead",
                        "eval" => "dnr-eval",
                        "select" => "select",
                        "resnet20" => "resnet-step",
                        "imp" => "imp-memory",
                        "infer" => "infer",
                        other => panic!("unknown key prefix {other}"),
                    };
                    assert!(subcommands.iter().any(|s| s == sub), "{key}");
                    if *imp == "pytorch" {
                        assert!(
                            cases(quick).iter().any(|c| c.args[0] == sub && c.python),
                            "{key}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn renders_the_inference_table() {
        let mut m = BTreeMap::new();
        let mut put = |key: &str, imp: &str, v: f64, note: &str| {
            m.insert(
                (key.to_string(), imp.to_string()),
                Series {
                    case: "infer".into(),
                    key: key.into(),
                    imp: imp.into(),
                    unit: "s".into(),
                    samples: vec![v],
                    threads: 1,
                    note: note.into(),
                },
            );
        };
        let b = "infer/lenet300-100/d0.02/b1000";
        put(&format!("{b}/dense"), "pytorch", 0.004, "");
        put(&format!("{b}/dense"), "rust", 0.004, "");
        put(&format!("{b}/density"), "rust", 0.0225, "IMP ticket x");
        put(&format!("{b}/masked"), "rust", 0.004, "");
        put(&format!("{b}/compact"), "rust", 0.002, "");
        put(&format!("{b}/csr"), "rust", 0.001, "");
        put(&format!("{b}/compact-csr"), "rust", 0.0008, "");
        put(&format!("{b}/macs/dense"), "rust", 266200.0, "");
        put(&format!("{b}/macs/compact"), "rust", 120000.0, "");
        put(&format!("{b}/macs/nonzero"), "rust", 5900.0, "");
        put(&format!("{b}/ap/density"), "rust", 0.0225, "synthetic: …");
        let r = render_inference(&m);
        assert!(
            r.contains("| lenet300-100 | IMP | 2.25% | 1000 | 4.000 ms | 1.00× | 1.00× | 2.00× | 4.00× | 5.00× | 266200 → 120000 (5900) |"),
            "{r}"
        );
        assert!(r.contains("| lenet300-100 | synthetic | 2.25% | 1000 | 4.000 ms | 1.00× | — | — | — | — | 0 → 0 (0) |"), "{r}");
        assert!(render_inference(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn renders_pass_miss_and_missing() {
        let mut m = BTreeMap::new();
        let mk = |key: &str, imp: &str, v: f64| Series {
            case: "c".into(),
            key: key.into(),
            imp: imp.into(),
            unit: "s".into(),
            samples: vec![v],
            threads: 1,
            note: "n".into(),
        };
        for s in [
            mk("resnet20/step", "rust", 0.5),
            mk("resnet20/step", "pytorch", 1.0),
            mk("imp/peak", "rust", 2.0),
            mk("imp/peak", "pytorch", 1.0),
        ] {
            m.insert((s.key.clone(), s.imp.clone()), s);
        }
        let meta = Meta {
            quick: false,
            threads: 1,
            torch_version: "2.11.0".into(),
            libtorch: "/t".into(),
            cpus: 2,
            cpu_model: "cpu".into(),
            date: "d".into(),
            elapsed_s: 1.0,
            rounds: 2,
        };
        let r = render(&meta, &m, &comparisons(), &["boom".into()]);
        assert!(r.contains("| ResNet-20 training step (ours channels-last, PyTorch NCHW): Rust / PyTorch | 0.500 s | 1.000 s | 0.50× | ≤ 0.85× | pass | n |"), "{r}");
        assert!(
            r.contains("Rust / PyTorch | 2.000 s | 1.000 s | 2.00× | ≤ 1.00× | **miss** | n |"),
            "{r}"
        );
        assert!(
            r.contains("| missing | missing | — | — | **error: no result** | |"),
            "{r}"
        );
        assert!(r.contains("- boom"));
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_785), (2026, 11, 28));
    }
}
