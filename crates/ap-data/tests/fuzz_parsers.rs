//! Fuzzing the data parsers with property tests on real files.
//!
//! * IDX: a prefix of the real MNIST and Fashion-MNIST test files (rewritten with a
//!   consistent header) is truncated, has bytes flipped, or has a header field (magic, type,
//!   dimension count, a dimension size) replaced, raw and gzipped, and as one file of a
//!   whole data set loaded with [`Dataset::load`].
//! * CIFAR-10/100: a fixture in the standard binary format has a file truncated, extended,
//!   bytes flipped or label bytes replaced.
//!
//! No case may panic; a truncated file or a changed header is an error; flips in the data
//! bytes still parse; every error names the file. Without the MNIST files (`cargo xtask
//! setup`) the IDX tests fail, or with `AP_REQUIRE_DATA=0` fuzz a synthetic file instead.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ap_data::cifar::{label_bytes, record_size, write_fixture};
use ap_data::idx::{encode_idx, parse_idx, read_idx};
use ap_data::{default_data_dir, DataError, Dataset, DatasetKind};
use ap_testkit::{missing_prerequisite, WhenUnset};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tch::Device;

/// Images kept from the real files.
const N: usize = 16;
const SOURCE: &str = "fuzz/t10k-images-idx3-ubyte";

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// The first `N` examples of `kind`'s test split as `(images, labels)` IDX bytes with
/// consistent headers; synthetic ones when the data is missing and that is allowed.
fn real_prefix(kind: DatasetKind, test: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = default_data_dir();
    let files = &kind.file_names()[2..];
    let found: Option<Vec<PathBuf>> = files.iter().map(|f| kind.locate(&dir, f).ok()).collect();
    let Some(paths) = found else {
        missing_prerequisite(
            test,
            &format!(
                "no {kind} test files under {} (run `cargo xtask setup`); fuzzing a synthetic \
                 IDX file instead",
                dir.display()
            ),
            "AP_REQUIRE_DATA",
            WhenUnset::Fail,
        );
        let pixels: Vec<u8> = (0..N * 784).map(|i| (i * 37 % 251) as u8).collect();
        let labels: Vec<u8> = (0..N).map(|i| (i % 10) as u8).collect();
        return (encode_idx(&[N, 28, 28], &pixels), encode_idx(&[N], &labels));
    };
    let images = read_idx(&paths[0]).unwrap_or_else(|e| panic!("{e}"));
    let labels = read_idx(&paths[1]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&images.dims[1..], &[28, 28]);
    (
        encode_idx(&[N, 28, 28], &images.data[..N * 784]),
        encode_idx(&[N], &labels.data[..N]),
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An edit of an IDX file.
#[derive(Debug, Clone)]
enum Edit {
    /// Keep only the first bytes.
    Truncate(usize),
    /// XOR bytes at positions.
    Flip(Vec<(usize, u8)>),
    /// Replace the two magic bytes.
    Magic([u8; 2]),
    /// Replace the type code.
    Type(u8),
    /// Replace the dimension count.
    Ndims(u8),
    /// Replace dimension `i`'s size.
    Dim(usize, u32),
}

fn edits(len: usize, ndims: usize) -> impl Strategy<Value = Edit> {
    let dim = prop_oneof![
        any::<u32>(),
        0u32..64,
        Just(u32::MAX),
        Just(N as u32 + 1),
        Just(27u32)
    ];
    prop_oneof![
        (0..len).prop_map(Edit::Truncate),
        prop::collection::vec((0..len, 1u8..=255), 1..5).prop_map(Edit::Flip),
        any::<[u8; 2]>()
            .prop_filter("changed", |m| *m != [0, 0])
            .prop_map(Edit::Magic),
        any::<u8>()
            .prop_filter("changed", |&t| t != 8)
            .prop_map(Edit::Type),
        any::<u8>()
            .prop_filter("changed", move |&n| usize::from(n) != ndims)
            .prop_map(Edit::Ndims),
        ((0..ndims), dim).prop_map(|(i, d)| Edit::Dim(i, d)),
    ]
}

/// Applies `edit`; returns the bytes and whether they must be rejected (`Some(true)`),
/// accepted (`Some(false)`), or either (`None`).
fn apply(file: &[u8], edit: &Edit) -> (Vec<u8>, Option<bool>) {
    let header = 4 + 4 * usize::from(file[3]);
    let mut b = file.to_vec();
    let must_fail = match edit {
        Edit::Truncate(cut) => {
            b.truncate(*cut);
            Some(true)
        }
        Edit::Flip(flips) => {
            for &(at, x) in flips {
                b[at] ^= x;
            }
            // Only data bytes changed: every byte value is a valid pixel or label byte.
            flips.iter().all(|&(at, _)| at >= header).then_some(false)
        }
        Edit::Magic(m) => {
            b[..2].copy_from_slice(m);
            Some(true)
        }
        Edit::Type(t) => {
            b[2] = *t;
            Some(true)
        }
        Edit::Ndims(n) => {
            b[3] = *n;
            None
        }
        Edit::Dim(i, d) => {
            let old = &mut b[4 + 4 * i..8 + 4 * i];
            let changed = old != d.to_be_bytes();
            old.copy_from_slice(&d.to_be_bytes());
            changed.then_some(true)
        }
    };
    (b, must_fail)
}

/// No panic (the caller got here); the outcome matches `must_fail`; errors name `source`.
fn judge<T>(
    result: Result<T, DataError>,
    must_fail: Option<bool>,
    source: &str,
) -> Result<Option<T>, TestCaseError> {
    match result {
        Ok(v) => {
            prop_assert_ne!(must_fail, Some(true), "invalid input accepted");
            Ok(Some(v))
        }
        Err(e) => {
            prop_assert_ne!(must_fail, Some(false), "valid input rejected: {}", e);
            let msg = e.to_string();
            prop_assert!(msg.contains(source), "{} does not name {}", msg, source);
            prop_assert!(msg.len() > source.len() + 10, "{}", msg);
            Ok(None)
        }
    }
}

fn fuzz_idx_bytes(kind: DatasetKind, test: &str) {
    let (images, labels) = real_prefix(kind, test);
    for file in [images, labels] {
        let ndims = usize::from(file[3]);
        runner(5000)
            .run(&edits(file.len(), ndims), |edit| {
                let (bytes, must_fail) = apply(&file, &edit);
                if let Some(arr) = judge(parse_idx(&bytes, SOURCE), must_fail, SOURCE)? {
                    let n: usize = arr.dims.iter().product();
                    prop_assert_eq!(n, arr.data.len());
                }
                Ok(())
            })
            .unwrap();
    }
}

#[test]
fn idx_bytes_mnist() {
    let _g = ap_testkit::torch_lock();
    fuzz_idx_bytes(DatasetKind::Mnist, "fuzz_parsers idx_bytes_mnist");
}

#[test]
fn idx_bytes_fashion_mnist() {
    let _g = ap_testkit::torch_lock();
    fuzz_idx_bytes(
        DatasetKind::FashionMnist,
        "fuzz_parsers idx_bytes_fashion_mnist",
    );
}

/// Through files, raw and gzipped (read_idx detects gzip by content): the same verdicts,
/// errors naming the path, and a damaged gzip stream an error too.
#[test]
fn idx_files_raw_and_gzipped() {
    let _g = ap_testkit::torch_lock();
    let (images, _) = real_prefix(DatasetKind::FashionMnist, "fuzz_parsers idx_files");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t10k-images-idx3-ubyte.gz");
    let name = path.display().to_string();
    let strategy = (
        edits(images.len(), 3),
        any::<bool>(),
        any::<prop::sample::Index>(),
    );
    runner(1500)
        .run(&strategy, |(edit, gz, cut)| {
            let (bytes, must_fail) = apply(&images, &edit);
            let content = if gz { gzip(&bytes) } else { bytes };
            std::fs::write(&path, &content).unwrap();
            judge(read_idx(&path), must_fail, &name)?;
            if gz {
                // A truncated gzip stream: an error, never a panic.
                let cut = 2 + cut.index(content.len() - 2);
                std::fs::write(&path, &content[..cut]).unwrap();
                judge(read_idx(&path), Some(true), &name)?;
            }
            Ok(())
        })
        .unwrap();
}

/// A data set of real prefixes in `root/<subdir>`: train and test are the same files.
fn write_idx_dataset(root: &Path, kind: DatasetKind, images: &[u8], labels: &[u8]) {
    let dir = root.join(kind.subdir());
    std::fs::create_dir_all(&dir).unwrap();
    for (i, f) in kind.file_names().iter().enumerate() {
        let bytes = if i % 2 == 0 { images } else { labels };
        let bytes = if f.ends_with(".gz") {
            gzip(bytes)
        } else {
            bytes.to_vec()
        };
        std::fs::write(dir.join(f), bytes).unwrap();
    }
}

/// One file of a whole MNIST data set damaged: loading fails naming a file of the data
/// set (shape, count and label checks included) or succeeds with `N` examples.
#[test]
fn idx_dataset_load() {
    let _g = ap_testkit::torch_lock();
    let kind = DatasetKind::Mnist;
    let (images, labels) = real_prefix(kind, "fuzz_parsers idx_dataset_load");
    let root = tempfile::tempdir().unwrap();
    write_idx_dataset(root.path(), kind, &images, &labels);
    let dir = root.path().join(kind.subdir());
    let shown = dir.display().to_string();
    let strategy = (0..4usize, edits(images.len(), 3), edits(labels.len(), 1));
    runner(1500)
        .run(&strategy, |(which, img_edit, lbl_edit)| {
            let name = kind.file_names()[which];
            let (bytes, must_fail) = if which % 2 == 0 {
                apply(&images, &img_edit)
            } else {
                apply(&labels, &lbl_edit)
            };
            std::fs::write(dir.join(name), &bytes).unwrap();
            // A flipped label byte may leave 0..10: either outcome, judged by the message.
            let must_fail = must_fail.filter(|&f| f || which % 2 == 0);
            let result = Dataset::load(kind, root.path(), Device::Cpu);
            if let Some(ds) = judge(result, must_fail, &shown)? {
                prop_assert_eq!((ds.train.len(), ds.test.len()), (N, N));
            }
            std::fs::write(
                dir.join(name),
                if which % 2 == 0 { &images } else { &labels },
            )
            .unwrap();
            Ok(())
        })
        .unwrap();
}

/// An edit of a CIFAR file: truncate, append, flip, or set a label byte of a record.
#[derive(Debug, Clone)]
enum CifarEdit {
    Truncate(usize),
    Append(Vec<u8>),
    Flip(Vec<(usize, u8)>),
    Label(usize, usize, u8),
}

/// Whether `bytes` is a valid file of `kind` (the oracle the loader must agree with).
fn cifar_valid(kind: DatasetKind, bytes: &[u8]) -> bool {
    let rec = record_size(kind);
    let limits: &[u8] = if kind == DatasetKind::Cifar10 {
        &[10]
    } else {
        &[20, 100]
    };
    !bytes.is_empty()
        && bytes.len() % rec == 0
        && bytes
            .chunks_exact(rec)
            .all(|r| r.iter().zip(limits).all(|(&v, &l)| v < l))
}

fn fuzz_cifar(kind: DatasetKind) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(kind.official_dir().unwrap());
    write_fixture(&dir, kind, 5, 2, 7).unwrap();
    let names: Vec<&str> = kind
        .train_files()
        .iter()
        .chain(kind.test_files())
        .copied()
        .collect();
    let originals: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(dir.join(n)).unwrap())
        .collect();
    let len = originals.iter().map(Vec::len).min().unwrap();
    let rec = record_size(kind);
    let edit = prop_oneof![
        (0..len).prop_map(CifarEdit::Truncate),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 1..8),
            Just(vec![0u8; rec]),
            Just(vec![0u8; rec + 1])
        ]
        .prop_map(CifarEdit::Append),
        prop::collection::vec((0..len, 1u8..=255), 1..5).prop_map(CifarEdit::Flip),
        (0..len / rec, 0..2usize, any::<u8>()).prop_map(|(r, f, v)| CifarEdit::Label(r, f, v)),
    ];
    let shown = dir.display().to_string();
    runner(1500)
        .run(&(0..names.len(), edit), |(which, edit)| {
            let mut b = originals[which].clone();
            match &edit {
                CifarEdit::Truncate(cut) => b.truncate(*cut),
                CifarEdit::Append(extra) => b.extend(extra),
                CifarEdit::Flip(flips) => flips.iter().for_each(|&(at, x)| b[at] ^= x),
                CifarEdit::Label(r, f, v) => b[r * rec + f % label_bytes(kind)] = *v,
            }
            let path = dir.join(names[which]);
            std::fs::write(&path, &b).unwrap();
            let must_fail = Some(!cifar_valid(kind, &b));
            let result = Dataset::load(kind, root.path(), Device::Cpu);
            if result.is_err() {
                // The message names the damaged file itself.
                judge(
                    Dataset::load(kind, root.path(), Device::Cpu),
                    must_fail,
                    &path.display().to_string(),
                )?;
            }
            if let Some(ds) = judge(result, must_fail, &shown)? {
                let n: usize = originals.iter().map(Vec::len).sum::<usize>() / rec;
                let extra = (b.len() as isize - originals[which].len() as isize) / rec as isize;
                prop_assert_eq!(
                    ds.train.len() + ds.test.len(),
                    (n as isize + extra) as usize
                );
            }
            std::fs::write(&path, &originals[which]).unwrap();
            Ok(())
        })
        .unwrap();
}

#[test]
fn cifar10_files() {
    let _g = ap_testkit::torch_lock();
    fuzz_cifar(DatasetKind::Cifar10);
}

#[test]
fn cifar100_files() {
    let _g = ap_testkit::torch_lock();
    fuzz_cifar(DatasetKind::Cifar100);
}
