//! Fuzzing the spec, grid and run-store readers with property tests on real files, and the
//! check that a batch fits the training set.
//!
//! * Specs and grids: the grids in `grids/*.toml` (and their bases as run specs, and a
//!   spec as tests write them) are truncated, have bytes flipped, lines deleted or
//!   duplicated, or a value replaced by one of another type. Parsing, validating and
//!   expanding never panic; every error names the file.
//! * The run store: a real run's `checkpoint-<r>.json` and `rounds.jsonl` are damaged the
//!   same ways. Resuming never panics, and resumes only from records that verify.

use std::path::{Path, PathBuf};

use ap_runs::spec::parse_toml;
use ap_runs::{execute, GridSpec, RunDir, RunOptions, RunSpec};
use ap_testkit::fixtures::{self, TomlExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const SOURCE: &str = "fuzz/specs/edited.toml";

/// A spec as the tests write them: LeNet-300-100 on (synthetic) MNIST, two IMP rounds of
/// 4 steps in batches of 8 ([`fixtures::lenet_mnist_spec`], smaller).
fn spec() -> toml::Value {
    fixtures::lenet_mnist_spec()
        .with("eval_batch_size", 16)
        .with("train", fixtures::train(fixtures::adam(1e-3), 8, 4))
        .with("prune.rate", 0.5)
        .with("ap.rate", 0.05)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Shrinking re-runs whole grid expansions: keep a failure quick to report.
        max_shrink_iters: 64,
        ..Config::default()
    })
}

/// The real grids, by file name.
fn grids() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../grids");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "grids/ holds {} grids", out.len());
    out
}

/// An edit of a text file.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(prop::sample::Index),
    Flip(Vec<(prop::sample::Index, u8)>),
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    /// Replace the value of a `key = value` line by one of another type.
    WrongType(prop::sample::Index, prop::sample::Index),
}

fn edits() -> impl Strategy<Value = Edit> {
    let idx = any::<prop::sample::Index>;
    prop_oneof![
        1 => idx().prop_map(Edit::Truncate),
        1 => prop::collection::vec((idx(), 1u8..=255), 1..4).prop_map(Edit::Flip),
        1 => idx().prop_map(Edit::DeleteLine),
        1 => idx().prop_map(Edit::DuplicateLine),
        2 => (idx(), idx()).prop_map(|(l, v)| Edit::WrongType(l, v)),
    ]
}

/// Values of every TOML type (and a few out-of-range numbers).
const VALUES: [&str; 12] = [
    "\"oops\"",
    "-1",
    "0",
    "18446744073709551616",
    "1e400",
    "-0.5",
    "nan",
    "true",
    "[]",
    "[1, \"a\"]",
    "{ bogus = 1 }",
    "1979-05-27",
];

/// The lines `key = value` of `text`, as (line index, value start).
fn assignments(text: &str) -> Vec<(usize, usize)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#') && !l.trim_start().starts_with('['))
        .filter_map(|(i, l)| l.find(" = ").map(|at| (i, at + 3)))
        .collect()
}

/// Applies `edit`; `Some(line)` when it replaced the value on that (1-based) line by one of
/// another type, so the result must be rejected there.
fn apply(text: &str, edit: &Edit) -> (String, Option<(usize, String)>) {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match edit {
        Edit::Truncate(at) => {
            let mut cut = at.index(text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return (text[..cut].to_owned(), None);
        }
        Edit::Flip(flips) => {
            let mut b = text.as_bytes().to_vec();
            for (at, x) in flips {
                let i = at.index(b.len());
                b[i] ^= x;
            }
            return (String::from_utf8_lossy(&b).into_owned(), None);
        }
        Edit::DeleteLine(at) => {
            lines.remove(at.index(lines.len()));
        }
        Edit::DuplicateLine(at) => {
            let i = at.index(lines.len());
            lines.insert(i, lines[i].clone());
        }
        Edit::WrongType(line, value) => {
            let spots = assignments(text);
            let (i, start) = spots[line.index(spots.len())];
            let old = lines[i][start..].trim().to_owned();
            let new = VALUES[value.index(VALUES.len())];
            let key = lines[i][..start - 3].trim().trim_matches('"').to_owned();
            lines[i] = format!("{}{new}", &lines[i][..start]);
            // Strings stay strings and numbers numbers where the type could still fit.
            let same_kind = (old.starts_with('"') == new.starts_with('"'))
                && (old.starts_with('[') == new.starts_with('['))
                && (old.starts_with('{') == new.starts_with('{'))
                && (old.parse::<f64>().is_ok() || old == "true" || old == "false")
                    == (new.parse::<f64>().is_ok() || new == "true" || new == "false");
            let typed = if same_kind { None } else { Some((i + 1, key)) };
            return (lines.join("\n") + "\n", typed);
        }
    }
    (lines.join("\n") + "\n", None)
}

/// An error from reading `SOURCE`: it names the file, and what is wrong in some words.
fn names_source(e: &anyhow::Error) -> Result<(), TestCaseError> {
    let msg = format!("{e:#}");
    prop_assert!(msg.contains(SOURCE), "{} does not name {}", msg, SOURCE);
    prop_assert!(msg.len() > SOURCE.len() + 10, "{}", msg);
    prop_assert!(
        !msg.trim_end().ends_with(':'),
        "nothing said after the place: {}",
        msg
    );
    Ok(())
}

/// Parses and validates a spec; errors name the file; a value of another type is rejected,
/// naming its line or key.
fn check_spec(text: &str, typed: Option<(usize, String)>) -> Result<(), TestCaseError> {
    match RunSpec::parse(text, SOURCE) {
        Ok(spec) => {
            prop_assert!(
                typed.is_none(),
                "a value of another type was accepted: {:?}",
                typed
            );
            // Whatever parsed is a spec again after a round trip (compared as text: a NaN
            // is not equal to itself).
            let again = toml::to_string(&spec).unwrap();
            let back = RunSpec::parse(&again, "round trip").unwrap();
            prop_assert_eq!(toml::to_string(&back).unwrap(), again);
            if let Err(e) = spec.validate() {
                // Validation names a field of the file (a key or a table).
                let msg = format!("{e:#}");
                let named = text
                    .lines()
                    .filter_map(|l| l.split(" = ").next())
                    .map(|k| k.trim().trim_matches(['[', ']', '"']))
                    .filter(|k| k.len() > 2)
                    .any(|k| msg.contains(k));
                prop_assert!(named, "names no field: {}", msg);
            }
        }
        Err(e) => {
            names_source(&e)?;
            if let Some((line, key)) = typed {
                // The line, or (for a tagged or flattened table such as `[prune]` or
                // `[ap]`, whose fields serde buffers without positions) the header of the
                // table holding it or of one around that.
                let headers: Vec<(usize, &str)> = text
                    .lines()
                    .take(line)
                    .enumerate()
                    .filter_map(|(i, l)| Some((i + 1, l.strip_prefix('[')?.trim_end_matches(']'))))
                    .collect();
                let inner = headers.last().map_or("", |h| h.1);
                let msg = format!("{e:#}");
                let at_header = headers.iter().any(|&(i, name)| {
                    (inner == name || inner.starts_with(&format!("{name}.")))
                        && msg.contains(&format!(":{i}:"))
                });
                prop_assert!(
                    msg.contains(&format!(":{line}:")) || at_header || msg.contains(&key),
                    "line {} `{}`: {}",
                    line,
                    key,
                    msg
                );
            }
        }
    }
    Ok(())
}

#[test]
fn edited_specs_never_panic_and_errors_name_the_file() {
    let _g = ap_testkit::torch_lock();
    // The test spec and the first run of every grid, as a spec file.
    let mut texts = vec![spec().to_toml()];
    for (name, text) in grids() {
        let grid: GridSpec = parse_toml(&text, &name).unwrap();
        let first = grid.expand(&name).unwrap().remove(0);
        texts.push(toml::to_string(&first).unwrap());
    }
    for t in &texts {
        RunSpec::parse(t, SOURCE).unwrap_or_else(|e| panic!("{e:#}\n{t}"));
    }
    runner(10_000)
        .run(&(prop::sample::select(texts), edits()), |(text, edit)| {
            let (edited, typed) = apply(&text, &edit);
            check_spec(&edited, typed)
        })
        .unwrap();
}

#[test]
fn edited_grids_never_panic_and_errors_name_the_file() {
    let _g = ap_testkit::torch_lock();
    let grids = grids();
    for (name, text) in &grids {
        let grid: GridSpec = parse_toml(text, name).unwrap();
        grid.expand(name).unwrap_or_else(|e| panic!("{e:#}"));
    }
    // paper.toml takes ~1 s to expand (180 runs): checked intact above, fuzzed through the
    // other grids, which use the same fields.
    let texts: Vec<String> = grids
        .into_iter()
        .filter(|(name, _)| name != "paper.toml")
        .map(|(_, t)| t)
        .collect();
    runner(1500)
        .run(&(prop::sample::select(texts), edits()), |(text, edit)| {
            let (edited, _) = apply(&text, &edit);
            match parse_toml::<GridSpec>(&edited, SOURCE).and_then(|g| g.expand(SOURCE)) {
                Ok(specs) => {
                    for s in &specs {
                        prop_assert!(s.validate().is_ok());
                    }
                }
                Err(e) => names_source(&e)?,
            }
            Ok(())
        })
        .unwrap();
}

/// A batch larger than the training set is an error naming the field, the data set and
/// its size; at validation (official size) and in a grid.
#[test]
fn a_batch_larger_than_the_training_set_is_rejected() {
    let _g = ap_testkit::torch_lock();
    let with = |b: i64, data: &str| {
        let text = spec()
            .with("train.batch_size", b)
            .with("dataset", data)
            .to_toml();
        RunSpec::parse(&text, SOURCE).unwrap().validate()
    };
    with(60_000, "mnist").unwrap();
    with(50_000, "cifar10").unwrap_or_else(|e| {
        // lenet300-100 may not take CIFAR's shape: that is another error.
        assert!(!e.to_string().contains("batch_size"), "{e}")
    });
    for (b, data, n) in [
        (100_000, "mnist", 60_000),
        (60_001, "fashion-mnist", 60_000),
    ] {
        let msg = with(b, data).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "train.batch_size = {b} is larger than the training set of {data} ({n} examples)"
            )
        );
    }
    let axes = [("train.batch_size", vec![60, 70000].into())];
    let grid = fixtures::grid_of("g", &axes, spec()).to_toml();
    let err = parse_toml::<GridSpec>(&grid, SOURCE)
        .unwrap()
        .expand(SOURCE)
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(SOURCE) && msg.contains("train.batch_size = 70000 is larger"),
        "{msg}"
    );
}

/// A synthetic MNIST of `n` training and `n / 2` test examples under `root/mnist`.
fn tiny_mnist(root: &Path, n: usize) {
    use ap_data::idx::encode_idx;
    let dir = root.join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let split = |n: usize, salt: usize| {
        let labels: Vec<u8> = (0..n).map(|i| ((i + salt) % 10) as u8).collect();
        let pixels: Vec<u8> = (0..n * 784)
            .map(|i| ((i / 784 + salt) % 10 * 25 + i % 7) as u8)
            .collect();
        (encode_idx(&[n, 28, 28], &pixels), encode_idx(&[n], &labels))
    };
    let (tr_i, tr_l) = split(n, 0);
    let (te_i, te_l) = split(n / 2, 3);
    let names = ap_data::DatasetKind::Mnist.file_names();
    for (name, bytes) in names.iter().zip([tr_i, tr_l, te_i, te_l]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn options(data_dir: PathBuf) -> RunOptions {
    RunOptions::quiet(data_dir, tch::Device::Cpu)
}

/// A batch that fits MNIST's official 60 000 but not the data actually loaded is an
/// error before any training (without the check, the run trained on one batch an epoch).
#[test]
fn a_batch_larger_than_the_loaded_training_set_stops_the_run() {
    let _g = ap_testkit::torch_lock();
    let root = tempfile::tempdir().unwrap();
    tiny_mnist(root.path(), 32);
    let spec = RunSpec::parse(&spec().with("train.batch_size", 40).to_toml(), SOURCE).unwrap();
    spec.validate().unwrap();
    let runs = root.path().join("runs");
    let err = execute(&spec, &runs, &options(root.path().to_path_buf())).unwrap_err();
    assert!(
        format!("{err:#}").contains(
            "train.batch_size = 40 is larger than the training set of mnist (32 examples)"
        ),
        "{err:#}"
    );
    assert!(RunDir::of(&runs, &spec).rounds().unwrap().is_empty());
}

/// Runs the tiny spec to the end; returns the run directory.
fn finished_run(root: &Path) -> RunDir {
    tiny_mnist(root, 32);
    let spec = RunSpec::parse(&spec().to_toml(), SOURCE).unwrap();
    let runs = root.join("runs");
    let records = execute(&spec, &runs, &options(root.to_path_buf())).unwrap();
    assert_eq!(records.len(), 3, "dense round and two pruning rounds");
    RunDir::of(&runs, &spec)
}

/// Bytes edits of a JSON file: truncation, flips, and a field's value replaced.
fn json_edits(len: usize) -> impl Strategy<Value = (usize, Vec<(usize, u8)>, Option<usize>)> {
    prop_oneof![
        (0..len).prop_map(|c| (c, vec![], None)),
        prop::collection::vec((0..len, 1u8..=255), 1..4).prop_map(move |f| (len, f, None)),
        (0..4usize).prop_map(move |k| (len, vec![], Some(k))),
    ]
}

/// Damaged `checkpoint-<r>.json` and `rounds.jsonl`: resuming never panics, and resumes
/// only with the records the checkpoint was written with; a damaged file is set aside.
#[test]
fn damaged_checkpoint_records_never_panic() {
    let _g = ap_testkit::torch_lock();
    let root = tempfile::tempdir().unwrap();
    let dir = finished_run(root.path());
    let good = dir.rounds().unwrap();
    let meta_path = dir.path.join("checkpoint-2.json");
    let meta = std::fs::read(&meta_path).unwrap();
    let rounds_path = dir.path.join("rounds.jsonl");
    let rounds = std::fs::read(&rounds_path).unwrap();
    let fields = ["round", "sha256", "records_sha256", "records"];
    let strategy = (any::<bool>(), json_edits(meta.len().max(rounds.len())));
    runner(400)
        .run(&strategy, |(on_meta, (cut, flips, field))| {
            let (path, orig) = if on_meta {
                (&meta_path, &meta)
            } else {
                (&rounds_path, &rounds)
            };
            let mut b = orig.clone();
            for (at, x) in flips {
                let i = at % b.len();
                b[i] ^= x;
            }
            b.truncate(cut);
            if let Some(k) = field {
                let mut v: serde_json::Value = serde_json::from_slice(&meta).unwrap();
                v[fields[k]] = serde_json::json!([1, "x"]);
                b = serde_json::to_vec(&v).unwrap();
            }
            std::fs::write(path, &b).unwrap();
            let changed = b != *orig;
            if !on_meta {
                match dir.rounds() {
                    Ok(r) => {
                        prop_assert!(r.len() <= good.len());
                        // DONE's checksum catches what still parses.
                        prop_assert_eq!(dir.verify_done().is_ok(), !changed);
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        prop_assert!(msg.contains(&rounds_path.display().to_string()), "{}", msg);
                    }
                }
            }
            match dir.resume_point().unwrap() {
                Some(resume) => prop_assert_eq!(&resume.records, &good),
                None => prop_assert!(on_meta && changed, "a good checkpoint was not used"),
            }
            // Put everything back for the next case.
            if !meta_path.exists() {
                let aside = std::fs::read_dir(&dir.path).unwrap().flatten();
                for e in aside {
                    let p = e.path();
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    if let Some(orig) = name.strip_suffix(".corrupt") {
                        std::fs::rename(&p, dir.path.join(orig)).unwrap();
                    }
                }
            }
            std::fs::write(&meta_path, &meta).unwrap();
            std::fs::write(&rounds_path, &rounds).unwrap();
            Ok(())
        })
        .unwrap();
}
