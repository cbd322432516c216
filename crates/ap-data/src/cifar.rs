//! The CIFAR-10 / CIFAR-100 binary format, and small fixtures in it for tests.
//!
//! Layout (the "binary version" from <https://www.cs.toronto.edu/~kriz/cifar.html>): a file is a
//! plain concatenation of fixed-size records, no header.
//!
//! * CIFAR-10 (`data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`): 1 label byte
//!   (`< 10`) + 3072 pixel bytes;
//! * CIFAR-100 (`train.bin`, `test.bin`): 1 coarse label byte (`< 20`) + 1 fine label byte
//!   (`< 100`) + 3072 pixel bytes; the fine label is the class.
//!
//! The pixel bytes are the red plane, then green, then blue, each 32×32 row-major, which is
//! exactly the memory layout of a `[3, 32, 32]` tensor.
//!
//! The files are not in any package registry, so `cargo xtask setup` does not fetch them; the
//! user downloads the tarball and passes its folder (or its parent) as the data directory.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::batch::SplitMix64;
use crate::{DataError, Dataset, DatasetKind, Split};

/// Pixel bytes per CIFAR record (`3 × 32 × 32`).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Number of label bytes before the pixels: 1 for CIFAR-10, 2 for CIFAR-100, 0 otherwise.
pub const fn label_bytes(kind: DatasetKind) -> usize {
    match kind {
        DatasetKind::Cifar10 => 1,
        DatasetKind::Cifar100 => 2,
        DatasetKind::Mnist | DatasetKind::FashionMnist => 0,
    }
}

/// Bytes per record: 3073 for CIFAR-10, 3074 for CIFAR-100 (0 for non-CIFAR kinds).
pub const fn record_size(kind: DatasetKind) -> usize {
    if kind.is_cifar() {
        label_bytes(kind) + IMAGE_BYTES
    } else {
        0
    }
}

/// The label fields of a record, with the number of classes of each.
fn label_fields(kind: DatasetKind) -> &'static [(&'static str, usize)] {
    match kind {
        DatasetKind::Cifar10 => &[("label", 10)],
        DatasetKind::Cifar100 => &[("coarse label", 20), ("fine label", 100)],
        DatasetKind::Mnist | DatasetKind::FashionMnist => &[],
    }
}

/// The first of `kind.cifar_search_dirs(data_dir)` holding any of the data set's files.
pub(crate) fn find_dir(kind: DatasetKind, data_dir: &Path) -> Result<PathBuf, DataError> {
    let dirs = kind.cifar_search_dirs(data_dir);
    let files = || kind.train_files().iter().chain(kind.test_files());
    dirs.iter()
        .find(|d| files().any(|f| d.join(f).is_file()))
        .cloned()
        .ok_or_else(|| DataError::MissingCifarFile {
            path: data_dir.join(kind.train_files()[0]),
            searched: join_paths(&dirs),
        })
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds `file_name` in the CIFAR directory under `data_dir` (see [`find_dir`]).
pub(crate) fn locate(
    kind: DatasetKind,
    data_dir: &Path,
    file_name: &str,
) -> Result<PathBuf, DataError> {
    let dir = find_dir(kind, data_dir)?;
    let path = dir.join(file_name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DataError::MissingCifarFile {
            path,
            searched: dir.display().to_string(),
        })
    }
}

/// Host-side contents of one split: label bytes (the class) and pixel bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Records {
    /// One class label per record (the fine label for CIFAR-100).
    pub(crate) labels: Vec<u8>,
    /// `IMAGE_BYTES` per record, planes R, G, B.
    pub(crate) pixels: Vec<u8>,
}

/// Validates `bytes` (the contents of `file`) and appends its records to `out`.
pub(crate) fn parse_records(
    kind: DatasetKind,
    bytes: &[u8],
    file: &str,
    out: &mut Records,
) -> Result<(), DataError> {
    let record = record_size(kind);
    let n_labels = label_bytes(kind);
    if bytes.is_empty() || record == 0 || bytes.len() % record != 0 {
        return Err(DataError::RecordSize {
            file: file.to_owned(),
            size: bytes.len(),
            record,
        });
    }
    let n = bytes.len() / record;
    out.labels.reserve(n);
    out.pixels.reserve(n * IMAGE_BYTES);
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        for (&value, &(field, limit)) in rec.iter().zip(label_fields(kind)) {
            if usize::from(value) >= limit {
                return Err(DataError::RecordLabel {
                    file: file.to_owned(),
                    record: index,
                    field,
                    value,
                    limit,
                });
            }
        }
        out.labels.push(rec[n_labels - 1]);
        out.pixels.extend_from_slice(&rec[n_labels..]);
    }
    Ok(())
}

/// Reads and validates the files `names` from `dir`, in order.
pub(crate) fn read_split(
    kind: DatasetKind,
    dir: &Path,
    names: &[&str],
) -> Result<Records, DataError> {
    let mut out = Records::default();
    for name in names {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(DataError::MissingCifarFile {
                path,
                searched: dir.display().to_string(),
            });
        }
        let file = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|err| DataError::Io {
            file: file.clone(),
            err,
        })?;
        parse_records(kind, &bytes, &file, &mut out)?;
    }
    Ok(out)
}

/// Moves `records` to `device` as `[N, 3, 32, 32]` per-channel normalised `f32` images and
/// `[N]` `i64` labels.
pub(crate) fn to_split(
    kind: DatasetKind,
    records: &Records,
    device: Device,
) -> Result<Split, DataError> {
    let n = records.labels.len() as i64;
    let [c, h, w] = kind.image_shape();
    let stats = |v: &[f64]| -> Result<Tensor, DataError> {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Ok(Tensor::f_from_slice(&v)?
            .f_view([1, c, 1, 1])?
            .f_to_device(device)?)
    };
    // Ship bytes (4x smaller than f32) and convert once on the device; normalise in place
    // so the peak is one float copy.
    let mut images = Tensor::f_from_slice(&records.pixels)?
        .f_view([n, c, h, w])?
        .f_to_device(device)?
        .f_to_kind(Kind::Float)?;
    let _ = images.f_div_scalar_(255.0)?;
    let _ = images.f_sub_(&stats(kind.channel_mean())?)?;
    let _ = images.f_div_(&stats(kind.channel_std())?)?;
    let labels = Tensor::f_from_slice(&records.labels)?
        .f_to_device(device)?
        .f_to_kind(Kind::Int64)?;
    Ok(Split { images, labels })
}

/// Loads a CIFAR data set (see [`Dataset::load`]).
pub(crate) fn load(
    kind: DatasetKind,
    data_dir: &Path,
    device: Device,
) -> Result<Dataset, DataError> {
    let dir = find_dir(kind, data_dir)?;
    // Check that every file is there before reading ~180 MB.
    for name in kind.train_files().iter().chain(kind.test_files()) {
        locate(kind, data_dir, name)?;
    }
    let train = to_split(kind, &read_split(kind, &dir, kind.train_files())?, device)?;
    let test = to_split(kind, &read_split(kind, &dir, kind.test_files())?, device)?;
    Ok(Dataset { kind, train, test })
}

/// Encodes one record: `labels` are the label bytes (`[label]` for CIFAR-10,
/// `[coarse, fine]` for CIFAR-100), `pixels` the 3072 bytes R plane, G plane, B plane.
///
/// No range check is made, so tests can write invalid records.
///
/// # Panics
/// If `kind` is not CIFAR, or the lengths do not match the layout (a test bug).
pub fn encode_record(kind: DatasetKind, labels: &[u8], pixels: &[u8]) -> Vec<u8> {
    assert!(kind.is_cifar(), "{kind} has no CIFAR records");
    assert_eq!(labels.len(), label_bytes(kind), "{kind}: label byte count");
    assert_eq!(pixels.len(), IMAGE_BYTES, "CIFAR pixel byte count");
    let mut out = Vec::with_capacity(record_size(kind));
    out.extend_from_slice(labels);
    out.extend_from_slice(pixels);
    out
}

/// What [`write_fixture`] wrote: the class labels of each split, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarFixture {
    /// Class labels of the training records (the fine labels for CIFAR-100).
    pub train_labels: Vec<u8>,
    /// Class labels of the test records.
    pub test_labels: Vec<u8>,
}

/// Writes a small synthetic data set in the CIFAR binary format into `dir` itself (created
/// if needed), under the official file names, so tests anywhere can call
/// `Dataset::load(kind, dir, device)` without the real data.
///
/// Records are deterministic in `seed`. Labels are uniform over the classes (CIFAR-100:
/// fine label uniform in `0..100`, coarse label `fine / 5`). Every channel of an image is a
/// class-dependent constant, `(label * 53 + channel * 97) % 192`, plus uniform noise in
/// `0..64`, so the classes are separable and a small network can learn them.
///
/// CIFAR-10's training records are spread over the five batch files as evenly as possible, so
/// `n_train` must be at least 5 (empty files are rejected by the loader); `n_test` must be at
/// least 1. Returns `InvalidInput` for those or a non-CIFAR `kind`, and I/O errors as they come.
pub fn write_fixture(
    dir: &Path,
    kind: DatasetKind,
    n_train: usize,
    n_test: usize,
    seed: u64,
) -> std::io::Result<CifarFixture> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let train_files = kind.train_files();
    if !kind.is_cifar() {
        return Err(invalid(format!(
            "write_fixture: {kind} is not a CIFAR data set"
        )));
    }
    if n_train < train_files.len() || n_test == 0 {
        return Err(invalid(format!(
            "write_fixture: {kind} needs at least {} training and 1 test record(s), got {n_train} and {n_test}",
            train_files.len()
        )));
    }
    std::fs::create_dir_all(dir)?;
    let mut rng = SplitMix64(seed ^ 0xc1fa_5eed_f1c7_0000);
    let mut make = |n: usize| -> (Vec<u8>, Vec<u8>) {
        let mut bytes = Vec::with_capacity(n * record_size(kind));
        let mut classes = Vec::with_capacity(n);
        for _ in 0..n {
            let class = rng.below(kind.num_classes() as u64) as u8;
            let labels: &[u8] = match kind {
                DatasetKind::Cifar100 => &[class / 5, class],
                _ => &[class],
            };
            let pixels: Vec<u8> = (0..IMAGE_BYTES)
                .map(|i| {
                    let channel = (i / 1024) as u64;
                    let base = (u64::from(class) * 53 + channel * 97) % 192;
                    (base + rng.below(64)) as u8
                })
                .collect();
            bytes.extend(encode_record(kind, labels, &pixels));
            classes.push(class);
        }
        (bytes, classes)
    };
    let mut train_labels = Vec::with_capacity(n_train);
    let k = train_files.len();
    for (i, name) in train_files.iter().enumerate() {
        let (bytes, labels) = make((i + 1) * n_train / k - i * n_train / k);
        std::fs::write(dir.join(name), bytes)?;
        train_labels.extend(labels);
    }
    let (bytes, test_labels) = make(n_test);
    std::fs::write(dir.join(kind.test_files()[0]), bytes)?;
    Ok(CifarFixture {
        train_labels,
        test_labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::assert_error;

    const C10: DatasetKind = DatasetKind::Cifar10;
    const C100: DatasetKind = DatasetKind::Cifar100;

    /// A record whose R plane is all 10, G all 20, B all 30.
    fn flat_pixels() -> Vec<u8> {
        [10u8, 20, 30]
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, 1024))
            .collect()
    }

    /// A record whose pixel at (c, y, x) is `(c * 7 + y * 3 + x + salt) % 256`.
    fn pattern_pixels(salt: usize) -> Vec<u8> {
        (0..IMAGE_BYTES)
            .map(|i| {
                let (c, y, x) = (i / 1024, i / 32 % 32, i % 32);
                ((c * 7 + y * 3 + x + salt) % 256) as u8
            })
            .collect()
    }

    /// Writes `records` (label bytes, pixels) as `name` in `dir`.
    fn write(dir: &Path, kind: DatasetKind, name: &str, records: &[(&[u8], Vec<u8>)]) -> String {
        std::fs::create_dir_all(dir).unwrap();
        let bytes: Vec<u8> = records
            .iter()
            .flat_map(|(l, p)| encode_record(kind, l, p))
            .collect();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }

    /// A complete small CIFAR-10 in `dir`: batch `i` holds labels `[i, i + 5]`, the test
    /// batch a flat record (label 7) and a pattern record (label 3).
    fn write_c10(dir: &Path) {
        for (i, name) in C10.train_files().iter().enumerate() {
            let (a, b) = ([i as u8], [i as u8 + 5]);
            write(
                dir,
                C10,
                name,
                &[(&a, pattern_pixels(i)), (&b, pattern_pixels(i + 50))],
            );
        }
        write(
            dir,
            C10,
            "test_batch.bin",
            &[(&[7], flat_pixels()), (&[3], pattern_pixels(9))],
        );
    }

    fn load(kind: DatasetKind, dir: &Path) -> Result<Dataset, DataError> {
        Dataset::load(kind, dir, Device::Cpu)
    }

    #[test]
    fn cifar10_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        write_c10(tmp.path());

        // Raw bytes, before normalisation.
        let raw = read_split(C10, tmp.path(), C10.test_files()).unwrap();
        assert_eq!(raw.labels, vec![7, 3]);
        assert_eq!(&raw.pixels[..IMAGE_BYTES], &flat_pixels()[..]);

        let ds = load(C10, tmp.path()).unwrap();
        assert_eq!(ds.train.images.size(), vec![10, 3, 32, 32]);
        assert_eq!(ds.test.images.size(), vec![2, 3, 32, 32]);
        assert_eq!(
            (ds.train.images.kind(), ds.train.labels.kind()),
            (Kind::Float, Kind::Int64)
        );
        assert_eq!(
            Vec::<i64>::try_from(&ds.train.labels).unwrap(),
            vec![0, 5, 1, 6, 2, 7, 3, 8, 4, 9]
        );
        assert_eq!(Vec::<i64>::try_from(&ds.test.labels).unwrap(), vec![7, 3]);

        // Channels land in the right place, normalised with the AP constants.
        let (mean, std) = C10.channel_stats();
        for (c, v) in [10.0, 20.0, 30.0].into_iter().enumerate() {
            let want = (v / 255.0 - mean[c]) / std[c];
            let plane = ds.test.images.get(0).get(c as i64);
            let (lo, hi) = (plane.min().double_value(&[]), plane.max().double_value(&[]));
            assert!(
                (lo - want).abs() < 1e-5 && (hi - want).abs() < 1e-5,
                "{c}: {lo} {hi} {want}"
            );
        }
        // Row-major planes: undo the normalisation and compare every byte.
        let mean_t = Tensor::from_slice(&mean).view([1, 3, 1, 1]);
        let std_t = Tensor::from_slice(&std).view([1, 3, 1, 1]);
        let back = ((ds.train.images.to_kind(Kind::Double) * std_t + mean_t) * 255.0).round();
        let back = Vec::<f64>::try_from(back.get(2).flatten(0, -1)).unwrap();
        let want: Vec<f64> = pattern_pixels(1).iter().map(|&b| f64::from(b)).collect();
        assert_eq!(back, want);
    }

    #[test]
    fn cifar100_round_trip_uses_fine_labels() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            C100,
            "train.bin",
            &[(&[3, 87], flat_pixels()), (&[19, 99], pattern_pixels(4))],
        );
        write(
            tmp.path(),
            C100,
            "test.bin",
            &[(&[0, 0], pattern_pixels(0))],
        );
        let raw = read_split(C100, tmp.path(), &["train.bin"]).unwrap();
        assert_eq!(raw.labels, vec![87, 99]);
        assert_eq!(&raw.pixels[IMAGE_BYTES..], &pattern_pixels(4)[..]);

        let ds = load(C100, tmp.path()).unwrap();
        assert_eq!(ds.num_classes(), 100);
        assert_eq!(ds.train.images.size(), vec![2, 3, 32, 32]);
        assert_eq!(
            Vec::<i64>::try_from(&ds.train.labels).unwrap(),
            vec![87, 99]
        );
        let (mean, std) = C100.channel_stats();
        for (c, v) in [10.0, 20.0, 30.0].into_iter().enumerate() {
            let got = ds.train.images.double_value(&[0, c as i64, 31, 0]);
            let want = (v / 255.0 - mean[c]) / std[c];
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn wrong_size_names_file_size_and_record() {
        let tmp = tempfile::tempdir().unwrap();
        write_c10(tmp.path());
        let path = tmp.path().join("data_batch_4.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.push(0);
        std::fs::write(&path, &bytes).unwrap();
        let err = load(C10, tmp.path()).unwrap_err();
        let file = path.display().to_string();
        assert_error!(err, DataError::RecordSize { size: 6147, record: 3073, .. } => &file, "6147", "3073");

        // Empty files are rejected too; CIFAR-100 records are 3074 bytes.
        let mut out = Records::default();
        let err = parse_records(C100, &[], "x.bin", &mut out).unwrap_err();
        assert_error!(
            err,
            DataError::RecordSize {
                size: 0,
                record: 3074,
                ..
            }
        );
        let err = parse_records(C100, &[0; 3073], "x.bin", &mut out).unwrap_err();
        assert!(err.to_string().contains("3074"), "{err}");
    }

    #[test]
    fn label_out_of_range_names_file_record_value() {
        let tmp = tempfile::tempdir().unwrap();
        write_c10(tmp.path());
        let bad = write(
            tmp.path(),
            C10,
            "test_batch.bin",
            &[
                (&[1], flat_pixels()),
                (&[9], flat_pixels()),
                (&[10], flat_pixels()),
            ],
        );
        let err = load(C10, tmp.path()).unwrap_err();
        assert_error!(err, DataError::RecordLabel { record: 2, value: 10, limit: 10, .. } => &bad, "record 2", "10");

        // CIFAR-100: coarse must be < 20, fine < 100.
        let mut out = Records::default();
        let rec = |c, f| encode_record(C100, &[c, f], &flat_pixels());
        let err =
            parse_records(C100, &[rec(1, 2), rec(20, 2)].concat(), "t.bin", &mut out).unwrap_err();
        assert_error!(
            err,
            DataError::RecordLabel {
                record: 1,
                field: "coarse label",
                value: 20,
                ..
            }
        );
        let err = parse_records(C100, &rec(19, 100), "t.bin", &mut out).unwrap_err();
        assert_error!(err, DataError::RecordLabel { record: 0, field: "fine label", value: 100, limit: 100, .. } => "t.bin: record 0: fine label is 100");
    }

    #[test]
    fn missing_files_say_where_to_get_the_data() {
        const HINT: &str = "https://www.cs.toronto.edu/~kriz/cifar.html";
        // Nothing at all: the error names the first expected file and all searched dirs.
        let tmp = tempfile::tempdir().unwrap();
        let err = load(C100, tmp.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::MissingCifarFile { .. }), "{err:?}");
        let want = tmp.path().join("train.bin").display().to_string();
        let nested = tmp.path().join("cifar-100-binary").display().to_string();
        assert!(
            msg.contains(&want)
                && msg.contains(&nested)
                && msg.contains(HINT)
                && msg.contains("--data-dir"),
            "{msg}"
        );

        // One file of several missing: that file is named.
        write_c10(tmp.path());
        let gone = tmp.path().join("data_batch_3.bin");
        std::fs::remove_file(&gone).unwrap();
        let msg = load(C10, tmp.path()).unwrap_err().to_string();
        assert!(
            msg.contains(&gone.display().to_string()) && msg.contains(HINT),
            "{msg}"
        );
        let err = C10.locate(tmp.path(), "data_batch_3.bin").unwrap_err();
        assert!(matches!(err, DataError::MissingCifarFile { path, .. } if path == gone));
    }

    #[test]
    fn both_folder_layouts_are_found() {
        for sub in [
            "",
            "cifar-10-batches-bin",
            "cifar10",
            "cifar10/cifar-10-batches-bin",
        ] {
            let tmp = tempfile::tempdir().unwrap();
            write_c10(&tmp.path().join(sub));
            let ds = load(C10, tmp.path()).unwrap_or_else(|e| panic!("{sub}: {e}"));
            assert_eq!((ds.train.len(), ds.test.len()), (10, 2), "{sub}");
            assert_eq!(
                C10.locate(tmp.path(), "test_batch.bin").unwrap(),
                tmp.path().join(sub).join("test_batch.bin")
            );
        }
        // Side by side with CIFAR-100 in the same root (official tarball names).
        let tmp = tempfile::tempdir().unwrap();
        write_c10(&tmp.path().join("cifar-10-batches-bin"));
        write_fixture(&tmp.path().join("cifar-100-binary"), C100, 3, 2, 1).unwrap();
        assert_eq!(load(C10, tmp.path()).unwrap().train.len(), 10);
        assert_eq!(load(C100, tmp.path()).unwrap().train.len(), 3);
    }

    #[test]
    fn fixtures_load_and_are_deterministic() {
        for kind in [C10, C100] {
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let fa = write_fixture(a.path(), kind, 23, 7, 42).unwrap();
            let fb = write_fixture(b.path(), kind, 23, 7, 42).unwrap();
            assert_eq!(fa, fb);
            for name in kind.train_files().iter().chain(kind.test_files()) {
                assert_eq!(
                    std::fs::read(a.path().join(name)).unwrap(),
                    std::fs::read(b.path().join(name)).unwrap()
                );
            }
            let ds = load(kind, a.path()).unwrap();
            assert_eq!((ds.train.len(), ds.test.len()), (23, 7));
            let labels = |t: &Tensor| Vec::<i64>::try_from(t).unwrap();
            let widen = |v: &[u8]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
            assert_eq!(labels(&ds.train.labels), widen(&fa.train_labels));
            assert_eq!(labels(&ds.test.labels), widen(&fa.test_labels));
            let c = tempfile::tempdir().unwrap();
            assert_ne!(write_fixture(c.path(), kind, 23, 7, 43).unwrap(), fa);
        }
        let tmp = tempfile::tempdir().unwrap();
        for (kind, n_train, n_test) in [(C10, 4, 1), (C100, 1, 0), (DatasetKind::Mnist, 9, 9)] {
            let err = write_fixture(tmp.path(), kind, n_train, n_test, 0).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{kind}");
        }
    }
}
