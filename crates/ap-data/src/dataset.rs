//! MNIST-style data sets as validated, normalised device tensors.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

use crate::{read_idx, DataError, EvalBatches, IdxArray, ShuffledBatches};

/// Side length of the square MNIST / Fashion-MNIST images.
pub const IMAGE_SIDE: usize = 28;

/// The data sets this crate can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Handwritten digits (LeCun et al.).
    Mnist,
    /// Zalando's clothing images, a drop-in MNIST replacement that is harder to fit.
    FashionMnist,
}

impl DatasetKind {
    /// All kinds, in a stable order.
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// The canonical name, as used in configs and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Parses a canonical name (case-insensitive; `_` accepted for `-`).
    pub fn from_name(name: &str) -> Result<Self, DataError> {
        let norm = name.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .ok_or_else(|| DataError::UnknownDataset {
                name: name.to_owned(),
                valid: Self::ALL.map(Self::name).join(", "),
            })
    }

    /// Subdirectory of the data dir holding this data set's files.
    pub const fn subdir(self) -> &'static str {
        self.name()
    }

    /// File names as `cargo xtask setup` stores them, in the order train images, train labels,
    /// test images, test labels. Either the raw or the `.gz` variant is accepted when reading.
    pub const fn file_names(self) -> [&'static str; 4] {
        match self {
            DatasetKind::Mnist => [
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            ],
            DatasetKind::FashionMnist => [
                "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
            ],
        }
    }

    /// Mean pixel intensity of the training set (in `[0, 1]`), for normalisation.
    pub const fn mean(self) -> f64 {
        match self {
            DatasetKind::Mnist => 0.1307,
            DatasetKind::FashionMnist => 0.2860,
        }
    }

    /// Standard deviation of the training set's pixel intensities, for normalisation.
    pub const fn std(self) -> f64 {
        match self {
            DatasetKind::Mnist => 0.3081,
            DatasetKind::FashionMnist => 0.3530,
        }
    }

    /// Number of classes (labels are `0..num_classes`).
    pub const fn num_classes(self) -> usize {
        10
    }

    /// Finds `file_name` under `data_dir/subdir`, accepting the raw or the `.gz` name.
    pub fn locate(self, data_dir: &Path, file_name: &str) -> Result<PathBuf, DataError> {
        let dir = data_dir.join(self.subdir());
        let raw = file_name.strip_suffix(".gz").unwrap_or(file_name);
        let gz = format!("{raw}.gz");
        // Prefer the name setup writes, then the other variant.
        let candidates = if file_name == raw {
            [raw, &gz]
        } else {
            [&gz, raw]
        };
        let found = candidates
            .into_iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file());
        found.ok_or_else(|| DataError::MissingFile {
            path: dir.join(file_name),
        })
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        Self::from_name(s)
    }
}

/// One split (train or test): normalised images and their labels, on one device.
#[derive(Debug)]
pub struct Split {
    /// `[N, 1, 28, 28]` `f32` images, normalised as `(x / 255 - mean) / std`.
    pub images: Tensor,
    /// `[N]` `i64` class labels.
    pub labels: Tensor,
}

impl Split {
    /// Reads, validates and converts an image/label file pair.
    fn load(
        kind: DatasetKind,
        images: &Path,
        labels: &Path,
        device: Device,
    ) -> Result<Self, DataError> {
        let (img_name, lbl_name) = (images.display().to_string(), labels.display().to_string());
        let img = read_idx(images)?;
        let lbl = read_idx(labels)?;
        let [n, h, w] = img.dims[..] else {
            return Err(shape_err(&img_name, "[N, 28, 28]", &img));
        };
        if (h, w) != (IMAGE_SIDE, IMAGE_SIDE) {
            return Err(shape_err(&img_name, "[N, 28, 28]", &img));
        }
        let [n_labels] = lbl.dims[..] else {
            return Err(shape_err(&lbl_name, "[N]", &lbl));
        };
        if n != n_labels {
            return Err(DataError::CountMismatch {
                images: img_name,
                labels: lbl_name,
                n_images: n,
                n_labels,
            });
        }
        let num_classes = kind.num_classes();
        if let Some((index, &value)) = lbl
            .data
            .iter()
            .enumerate()
            .find(|(_, &v)| usize::from(v) >= num_classes)
        {
            return Err(DataError::LabelOutOfRange {
                file: lbl_name,
                index,
                value,
                num_classes,
            });
        }
        // Ship bytes (4x smaller than f32) and convert once on the device.
        let images = Tensor::f_from_slice(&img.data)?
            .f_view([n as i64, 1, h as i64, w as i64])?
            .f_to_device(device)?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(255.0)?
            .f_sub_scalar(kind.mean())?
            .f_div_scalar(kind.std())?;
        let labels = Tensor::f_from_slice(&lbl.data)?
            .f_to_device(device)?
            .f_to_kind(Kind::Int64)?;
        Ok(Split { images, labels })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.size().first().map_or(0, |&n| n as usize)
    }

    /// Whether the split has no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device the tensors live on.
    pub fn device(&self) -> Device {
        self.labels.device()
    }

    /// Gathers the `(images, labels)` rows at `idx` (an `i64` index tensor on the same device,
    /// e.g. from [`ShuffledBatches`]).
    ///
    /// # Panics
    /// If `idx` is not a valid index tensor for this split (a caller bug, not bad data).
    pub fn batch(&self, idx: &Tensor) -> (Tensor, Tensor) {
        (
            self.images.index_select(0, idx),
            self.labels.index_select(0, idx),
        )
    }

    /// The shuffled index batches of one epoch, on this split's device.
    pub fn shuffled_batches(
        &self,
        batch_size: usize,
        seed: u64,
        epoch: u64,
    ) -> Result<ShuffledBatches, DataError> {
        ShuffledBatches::new(self.len(), batch_size, seed, epoch, self.device())
    }

    /// In-order `(images, labels)` batches as views into the split (no copies).
    pub fn eval_batches(&self, batch_size: usize) -> Result<EvalBatches<'_>, DataError> {
        EvalBatches::new(self, batch_size)
    }

    /// A second handle to the same tensors (no data copy).
    pub fn shallow_clone(&self) -> Split {
        Split {
            images: self.images.shallow_clone(),
            labels: self.labels.shallow_clone(),
        }
    }
}

fn shape_err(file: &str, expected: &str, arr: &IdxArray) -> DataError {
    DataError::Shape {
        file: file.to_owned(),
        expected: expected.to_owned(),
        actual: arr.dims.clone(),
    }
}

/// A data set's train and test splits.
#[derive(Debug)]
pub struct Dataset {
    /// Which data set this is.
    pub kind: DatasetKind,
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
}

impl Dataset {
    /// Loads `kind` from `data_dir` (the data root, containing e.g. `mnist/`) onto `device`.
    pub fn load(kind: DatasetKind, data_dir: &Path, device: Device) -> Result<Dataset, DataError> {
        let [tr_img, tr_lbl, te_img, te_lbl] = kind.file_names().map(|f| kind.locate(data_dir, f));
        let train = Split::load(kind, &tr_img?, &tr_lbl?, device)?;
        let test = Split::load(kind, &te_img?, &te_lbl?, device)?;
        Ok(Dataset { kind, train, test })
    }

    /// [`Dataset::load`] from [`default_data_dir`].
    pub fn load_default(kind: DatasetKind, device: Device) -> Result<Dataset, DataError> {
        Self::load(kind, &default_data_dir(), device)
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.kind.num_classes()
    }
}

/// The data root, from the process environment (see [`data_dir_from_env`]).
pub fn default_data_dir() -> PathBuf {
    data_dir_from_env(|key| std::env::var_os(key))
}

/// The data root given an environment lookup (pure, so tests need not mutate the environment).
///
/// Precedence: `$AP_DATA_DIR`, `$AP_CACHE_DIR/data`, `$XDG_CACHE_HOME/ap-prune/data`,
/// `$HOME/.cache/ap-prune/data`; empty values count as unset. Without any of them, the
/// relative path `.cache/ap-prune/data` is returned so the error message still names a path.
pub fn data_dir_from_env(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let get = |key: &str| var(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = get("AP_DATA_DIR") {
        return dir;
    }
    if let Some(cache) = get("AP_CACHE_DIR") {
        return cache.join("data");
    }
    get("XDG_CACHE_HOME")
        .or_else(|| get("HOME").map(|home| home.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("ap-prune")
        .join("data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::encode_idx;
    use std::collections::HashMap;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn data_dir_precedence() {
        let all = [
            ("AP_DATA_DIR", "/d"),
            ("AP_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(data_dir_from_env(env(&all)), PathBuf::from("/d"));
        assert_eq!(data_dir_from_env(env(&all[1..])), PathBuf::from("/c/data"));
        assert_eq!(
            data_dir_from_env(env(&all[2..])),
            PathBuf::from("/x/ap-prune/data")
        );
        assert_eq!(
            data_dir_from_env(env(&all[3..])),
            PathBuf::from("/h/.cache/ap-prune/data")
        );
        assert_eq!(
            data_dir_from_env(env(&[("AP_DATA_DIR", ""), ("HOME", "/h")])),
            PathBuf::from("/h/.cache/ap-prune/data")
        );
        assert_eq!(
            data_dir_from_env(env(&[])),
            PathBuf::from(".cache/ap-prune/data")
        );
    }

    #[test]
    fn names_round_trip() {
        for kind in DatasetKind::ALL {
            assert_eq!(DatasetKind::from_name(kind.name()).unwrap(), kind);
            assert_eq!(kind.to_string().parse::<DatasetKind>().unwrap(), kind);
        }
        assert_eq!(
            DatasetKind::from_name("Fashion_MNIST").unwrap(),
            DatasetKind::FashionMnist
        );
        let msg = DatasetKind::from_name("cifar").unwrap_err().to_string();
        assert!(
            msg.contains("cifar") && msg.contains("mnist, fashion-mnist"),
            "{msg}"
        );
    }

    /// Synthetic data set: `n_train`/`n_test` images whose pixel values are `label * 20`.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(kind: DatasetKind, gzip: bool) -> Self {
            let fx = Fixture {
                dir: tempfile::tempdir().unwrap(),
            };
            fx.write_split(kind, 0, &[3, 1, 4, 1, 5], gzip);
            fx.write_split(kind, 2, &[9, 2, 6], gzip);
            fx
        }

        fn path(&self, kind: DatasetKind, file: usize) -> PathBuf {
            self.dir
                .path()
                .join(kind.subdir())
                .join(kind.file_names()[file])
        }

        fn write(
            &self,
            kind: DatasetKind,
            file: usize,
            dims: &[usize],
            data: &[u8],
            gzip: bool,
        ) -> String {
            let path = self.path(kind, file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let bytes = encode_idx(dims, data);
            let bytes = if gzip {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&bytes).unwrap();
                enc.finish().unwrap()
            } else {
                bytes
            };
            std::fs::write(&path, bytes).unwrap();
            path.display().to_string()
        }

        fn write_split(&self, kind: DatasetKind, first_file: usize, labels: &[u8], gzip: bool) {
            let px = IMAGE_SIDE * IMAGE_SIDE;
            let images: Vec<u8> = labels
                .iter()
                .flat_map(|&l| std::iter::repeat_n(l * 20, px))
                .collect();
            self.write(
                kind,
                first_file,
                &[labels.len(), IMAGE_SIDE, IMAGE_SIDE],
                &images,
                gzip,
            );
            self.write(kind, first_file + 1, &[labels.len()], labels, gzip);
        }

        fn load(&self, kind: DatasetKind) -> Result<Dataset, DataError> {
            Dataset::load(kind, self.dir.path(), Device::Cpu)
        }
    }

    #[test]
    fn loads_and_normalises() {
        for kind in DatasetKind::ALL {
            for gzip in [false, true] {
                let ds = Fixture::new(kind, gzip).load(kind).unwrap();
                assert_eq!(ds.train.images.size(), vec![5, 1, 28, 28]);
                assert_eq!(
                    (ds.train.images.kind(), ds.train.labels.kind()),
                    (Kind::Float, Kind::Int64)
                );
                assert_eq!((ds.train.len(), ds.test.len()), (5, 3));
                assert_eq!(
                    Vec::<i64>::try_from(&ds.test.labels).unwrap(),
                    vec![9, 2, 6]
                );
                let px = ds.test.images.double_value(&[0, 0, 5, 5]);
                let want = (180.0 / 255.0 - kind.mean()) / kind.std();
                assert!((px - want).abs() < 1e-5, "{px} vs {want}");
            }
        }
    }

    #[test]
    fn raw_and_gz_names_both_accepted() {
        // Fashion expects `.gz` names; write raw ones instead (and MNIST the other way round).
        for (kind, gz_names) in [
            (DatasetKind::FashionMnist, false),
            (DatasetKind::Mnist, true),
        ] {
            let fx = Fixture::new(kind, false);
            for f in 0..4 {
                let from = fx.path(kind, f);
                let name = from.file_name().unwrap().to_str().unwrap();
                let to = if gz_names {
                    format!("{name}.gz")
                } else {
                    name.trim_end_matches(".gz").to_owned()
                };
                std::fs::rename(&from, from.with_file_name(to)).unwrap();
            }
            assert_eq!(fx.load(kind).unwrap().train.len(), 5);
        }
    }

    #[test]
    fn batching_gathers_matching_rows() {
        let ds = Fixture::new(DatasetKind::Mnist, false)
            .load(DatasetKind::Mnist)
            .unwrap();
        let mut seen = Vec::new();
        for idx in ds.train.shuffled_batches(2, 11, 3).unwrap() {
            let (x, y) = ds.train.batch(&idx);
            assert_eq!(x.size()[0], y.size()[0]);
            // Pixel value encodes the label, so rows and labels must still line up.
            let m = DatasetKind::Mnist;
            let want = (y.to_kind(Kind::Float) * (20.0 / 255.0) - m.mean()) / m.std();
            assert!(x
                .select(1, 0)
                .select(1, 0)
                .select(1, 0)
                .allclose(&want, 1e-5, 1e-5, false));
            seen.extend(Vec::<i64>::try_from(&idx).unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);

        let sizes: Vec<i64> = ds
            .train
            .eval_batches(2)
            .unwrap()
            .map(|(x, _)| x.size()[0])
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let labels: Vec<i64> = ds
            .train
            .eval_batches(2)
            .unwrap()
            .flat_map(|(_, y)| Vec::<i64>::try_from(&y).unwrap())
            .collect();
        assert_eq!(labels, vec![3, 1, 4, 1, 5]);
        assert!(matches!(
            ds.train.eval_batches(0),
            Err(DataError::ZeroBatchSize)
        ));
    }

    #[test]
    fn missing_file_says_run_setup() {
        let fx = Fixture::new(DatasetKind::Mnist, false);
        let path = fx.path(DatasetKind::Mnist, 3);
        std::fs::remove_file(&path).unwrap();
        let err = fx.load(DatasetKind::Mnist).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::MissingFile { .. }), "{err:?}");
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("cargo xtask setup"),
            "{msg}"
        );
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let fx = Fixture::new(DatasetKind::Mnist, false);
        let labels = fx.write(DatasetKind::Mnist, 1, &[4], &[1, 2, 3, 4], false);
        let err = fx.load(DatasetKind::Mnist).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::CountMismatch {
                    n_images: 5,
                    n_labels: 4,
                    ..
                }
            ),
            "{err:?}"
        );
        let images = fx.path(DatasetKind::Mnist, 0).display().to_string();
        let msg = err.to_string();
        assert!(
            msg.contains(&images)
                && msg.contains(&labels)
                && msg.contains('5')
                && msg.contains('4'),
            "{msg}"
        );
    }

    #[test]
    fn label_out_of_range_names_file_index_value() {
        let fx = Fixture::new(DatasetKind::FashionMnist, true);
        let labels = fx.write(DatasetKind::FashionMnist, 3, &[3], &[1, 10, 200], true);
        let err = fx.load(DatasetKind::FashionMnist).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    index: 1,
                    value: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&labels) && msg.contains("index 1") && msg.contains("10"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_shapes() {
        let fx = Fixture::new(DatasetKind::Mnist, false);
        let images = fx.write(DatasetKind::Mnist, 0, &[5, 28 * 28], &[0; 5 * 784], false);
        let err = fx.load(DatasetKind::Mnist).unwrap_err();
        assert!(
            matches!(&err, DataError::Shape { actual, .. } if actual == &vec![5, 784]),
            "{err:?}"
        );
        assert!(err.to_string().contains(&images) && err.to_string().contains("[N, 28, 28]"));

        let fx = Fixture::new(DatasetKind::Mnist, false);
        fx.write(DatasetKind::Mnist, 0, &[1, 32, 32], &[0; 1024], false);
        assert!(matches!(
            fx.load(DatasetKind::Mnist),
            Err(DataError::Shape { .. })
        ));

        let fx = Fixture::new(DatasetKind::Mnist, false);
        let labels = fx.write(DatasetKind::Mnist, 1, &[5, 1], &[0; 5], false);
        let err = fx.load(DatasetKind::Mnist).unwrap_err();
        assert!(
            matches!(err, DataError::Shape { .. }) && err.to_string().contains(&labels),
            "{err}"
        );
    }

    #[test]
    fn corrupt_file_is_reported_through_load() {
        let fx = Fixture::new(DatasetKind::Mnist, false);
        let path = fx.path(DatasetKind::Mnist, 2);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, bytes).unwrap();
        let err = fx.load(DatasetKind::Mnist).unwrap_err();
        assert!(
            matches!(err, DataError::SizeMismatch { .. })
                && err.to_string().contains(&path.display().to_string())
        );
    }
}
