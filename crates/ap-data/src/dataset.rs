//! Data sets (MNIST family and CIFAR) as validated, normalised device tensors.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

use crate::{cifar, permutation, read_idx, DataError, EvalBatches, IdxArray, ShuffledBatches};

/// Side length of the square MNIST / Fashion-MNIST images (CIFAR: see
/// [`DatasetKind::image_side`]).
pub const IMAGE_SIDE: usize = 28;

const CIFAR10_MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];
const CIFAR10_STD: [f64; 3] = [0.2023, 0.1994, 0.2010];
const CIFAR100_MEAN: [f64; 3] = [0.5071, 0.4865, 0.4409];
const CIFAR100_STD: [f64; 3] = [0.2673, 0.2564, 0.2762];

/// The average of per-channel values, summed in channel order (one channel: the value).
const fn channel_average(values: &[f64]) -> f64 {
    let mut sum = 0.0;
    let mut i = 0;
    while i < values.len() {
        sum += values[i];
        i += 1;
    }
    sum / values.len() as f64
}

/// The data sets this crate can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Handwritten digits (LeCun et al.).
    Mnist,
    /// Zalando's clothing images, a drop-in MNIST replacement that is harder to fit.
    FashionMnist,
    /// CIFAR-10: 32×32 colour images, 10 classes (Krizhevsky 2009).
    Cifar10,
    /// CIFAR-100: 32×32 colour images, 100 fine classes (the 20 coarse ones are ignored).
    Cifar100,
}

impl DatasetKind {
    /// All kinds, in a stable order.
    pub const ALL: [DatasetKind; 4] = [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
    ];

    /// The canonical name, as used in configs and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
        }
    }

    /// Parses a canonical name (case-insensitive; `_` and `-` are ignored, so `CIFAR-10` and
    /// `fashion_mnist` are accepted too). The error lists every valid name.
    pub fn from_name(name: &str) -> Result<Self, DataError> {
        let squash = |s: &str| s.trim().to_ascii_lowercase().replace(['_', '-'], "");
        let norm = squash(name);
        Self::ALL
            .into_iter()
            .find(|k| squash(k.name()) == norm)
            .ok_or_else(|| DataError::UnknownDataset {
                name: name.to_owned(),
                valid: Self::ALL.map(Self::name).join(", "),
            })
    }

    /// Whether this is CIFAR-10 or CIFAR-100 (binary record files, 3 channels, 32×32).
    pub const fn is_cifar(self) -> bool {
        matches!(self, DatasetKind::Cifar10 | DatasetKind::Cifar100)
    }

    /// Subdirectory of the data dir holding this data set's files.
    ///
    /// CIFAR is also looked for elsewhere; see [`DatasetKind::cifar_search_dirs`].
    pub const fn subdir(self) -> &'static str {
        self.name()
    }

    /// Folder name inside the official binary tarball (`cifar-10-batches-bin`,
    /// `cifar-100-binary`); `None` for the MNIST family.
    pub const fn official_dir(self) -> Option<&'static str> {
        match self {
            DatasetKind::Cifar10 => Some("cifar-10-batches-bin"),
            DatasetKind::Cifar100 => Some("cifar-100-binary"),
            DatasetKind::Mnist | DatasetKind::FashionMnist => None,
        }
    }

    /// The directories searched for CIFAR files given the `--data-dir` value, in order:
    /// `dir`, `dir/<official>`, `dir/<name>`, `dir/<name>/<official>` (empty for MNIST).
    pub fn cifar_search_dirs(self, data_dir: &Path) -> Vec<PathBuf> {
        let Some(official) = self.official_dir() else {
            return Vec::new();
        };
        vec![
            data_dir.to_path_buf(),
            data_dir.join(official),
            data_dir.join(self.subdir()),
            data_dir.join(self.subdir()).join(official),
        ]
    }

    /// The files of the training split (MNIST family: images then labels; CIFAR-10: the five
    /// `data_batch_*.bin`; CIFAR-100: `train.bin`).
    pub const fn train_files(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Cifar10 => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            DatasetKind::Cifar100 => &["train.bin"],
            DatasetKind::Mnist => &["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
            DatasetKind::FashionMnist => {
                &["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
            }
        }
    }

    /// The files of the test split (see [`DatasetKind::train_files`]).
    pub const fn test_files(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Cifar10 => &["test_batch.bin"],
            DatasetKind::Cifar100 => &["test.bin"],
            DatasetKind::Mnist => &["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
            DatasetKind::FashionMnist => {
                &["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
            }
        }
    }

    /// File names as `cargo xtask setup` stores them, in the order train images, train labels,
    /// test images, test labels. Either the raw or the `.gz` variant is accepted when reading.
    ///
    /// CIFAR files hold images and labels together, so each pair names the same file; CIFAR-10
    /// spreads its training split over five files of which only the first fits here; use
    /// [`DatasetKind::train_files`] / [`DatasetKind::test_files`] for the complete lists.
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
            DatasetKind::Cifar10 => [
                "data_batch_1.bin",
                "data_batch_1.bin",
                "test_batch.bin",
                "test_batch.bin",
            ],
            DatasetKind::Cifar100 => ["train.bin", "train.bin", "test.bin", "test.bin"],
        }
    }

    /// Mean pixel intensity of the training set (in `[0, 1]`), for normalisation.
    ///
    /// For CIFAR (3 channels) this is the average of the per-channel means and is *not* what
    /// loading uses; see [`DatasetKind::channel_mean`].
    pub const fn mean(self) -> f64 {
        channel_average(self.channel_mean())
    }

    /// Standard deviation of the training set's pixel intensities, for normalisation.
    ///
    /// For CIFAR this is the average of the per-channel values; see
    /// [`DatasetKind::channel_std`].
    pub const fn std(self) -> f64 {
        channel_average(self.channel_std())
    }

    /// Per-channel means (in `[0, 1]`) used for normalisation, one per image channel.
    ///
    /// CIFAR-10 uses the AP release's constants `(0.4914, 0.4822, 0.4465)`; CIFAR-100
    /// `(0.5071, 0.4865, 0.4409)`; the MNIST family its single-channel mean.
    pub const fn channel_mean(self) -> &'static [f64] {
        self.normalisation().0
    }

    /// Per-channel standard deviations used for normalisation.
    ///
    /// CIFAR-10 uses the AP release's `(0.2023, 0.1994, 0.2010)`, kept for comparability with
    /// its numbers; they are smaller than the true pixel standard deviations (≈ 0.247, 0.243,
    /// 0.261), so normalised CIFAR-10 pixels have a standard deviation of ≈ 1.2, not 1.
    /// CIFAR-100 uses `(0.2673, 0.2564, 0.2762)`.
    pub const fn channel_std(self) -> &'static [f64] {
        self.normalisation().1
    }

    /// `(per-channel means, per-channel standard deviations)`: the one table of the
    /// normalisation constants.
    const fn normalisation(self) -> (&'static [f64], &'static [f64]) {
        match self {
            DatasetKind::Mnist => (&[0.1307], &[0.3081]),
            DatasetKind::FashionMnist => (&[0.2860], &[0.3530]),
            DatasetKind::Cifar10 => (&CIFAR10_MEAN, &CIFAR10_STD),
            DatasetKind::Cifar100 => (&CIFAR100_MEAN, &CIFAR100_STD),
        }
    }

    /// `(per-channel means, per-channel stds)`, as [`DatasetKind::channel_mean`] and
    /// [`DatasetKind::channel_std`]; loaded images are `(x / 255 - mean[c]) / std[c]`.
    pub fn channel_stats(self) -> (Vec<f64>, Vec<f64>) {
        (self.channel_mean().to_vec(), self.channel_std().to_vec())
    }

    /// Number of image channels (1 for the MNIST family, 3 for CIFAR).
    pub const fn channels(self) -> usize {
        if self.is_cifar() {
            3
        } else {
            1
        }
    }

    /// Side length of the square images (28 for the MNIST family, 32 for CIFAR).
    pub const fn image_side(self) -> usize {
        if self.is_cifar() {
            32
        } else {
            IMAGE_SIDE
        }
    }

    /// The shape of one image, `[C, H, W]`.
    pub const fn image_shape(self) -> [i64; 3] {
        let side = self.image_side() as i64;
        [self.channels() as i64, side, side]
    }

    /// The shape of one image after [`Dataset::padded`] adds `pad` pixels on each side:
    /// `[C, H + 2·pad, W + 2·pad]` (what a model must accept when a run pads its data).
    pub const fn padded_image_shape(self, pad: usize) -> [i64; 3] {
        let [c, h, w] = self.image_shape();
        let extra = 2 * pad as i64;
        [c, h + extra, w + extra]
    }

    /// Examples in the official training split, known without loading it: 60 000 for the
    /// MNIST family, 50 000 for CIFAR (runs train on all of them; a validation split, see
    /// [`Dataset::split_validation`], takes its examples out of these).
    pub const fn train_examples(self) -> usize {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => 60_000,
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => 50_000,
        }
    }

    /// Number of classes (labels are `0..num_classes`): 100 for CIFAR-100, else 10.
    pub const fn num_classes(self) -> usize {
        match self {
            DatasetKind::Cifar100 => 100,
            DatasetKind::Mnist | DatasetKind::FashionMnist | DatasetKind::Cifar10 => 10,
        }
    }

    /// Finds `file_name` under `data_dir/subdir`, accepting the raw or the `.gz` name.
    ///
    /// For CIFAR, finds it in the first of [`DatasetKind::cifar_search_dirs`] that holds any of
    /// the data set's files; the error then says where to download the data.
    pub fn locate(self, data_dir: &Path, file_name: &str) -> Result<PathBuf, DataError> {
        if self.is_cifar() {
            return cifar::locate(self, data_dir, file_name);
        }
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
    /// `[N, C, H, W]` `f32` images (`[N, 1, 28, 28]` for the MNIST family, `[N, 3, 32, 32]`
    /// for CIFAR), normalised per channel as `(x / 255 - mean[c]) / std[c]`.
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
        // Ship bytes (4x smaller than f32) and convert once on the device; normalise in
        // place, so the peak is one float copy, not one per step (ap-bench measured the
        // chained version as the peak of a whole IMP round).
        let mut images = Tensor::f_from_slice(&img.data)?
            .f_view([n as i64, 1, h as i64, w as i64])?
            .f_to_device(device)?
            .f_to_kind(Kind::Float)?;
        let _ = images.f_div_scalar_(255.0)?;
        let _ = images.f_sub_scalar_(kind.mean())?;
        let _ = images.f_div_scalar_(kind.std())?;
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

    /// This split with `pad` pixels added on each side of every image, filled per channel
    /// with `fill` (see [`Dataset::padded`]); `pad = 0` returns the same tensors.
    fn padded(&self, pad: usize, fill: &[f64]) -> Result<Split, DataError> {
        if pad == 0 {
            return Ok(self.shallow_clone());
        }
        let p = pad as i64;
        let size = self.images.size();
        let &[n, c, h, w] = &size[..] else {
            unreachable!("loaded images are [N, C, H, W], not {size:?}")
        };
        let fill = Tensor::f_from_slice(fill)?
            .f_view([1, c, 1, 1])?
            .f_to_device(self.images.device())?
            .f_to_kind(self.images.kind())?;
        let images = fill
            .f_expand([n, c, h + 2 * p, w + 2 * p], false)?
            .f_contiguous()?;
        images
            .f_narrow(2, p, h)?
            .f_narrow(3, p, w)?
            .f_copy_(&self.images)?;
        Ok(Split {
            images,
            labels: self.labels.shallow_clone(),
        })
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
    ///
    /// CIFAR is read from `data_dir` itself or from one of the other
    /// [`DatasetKind::cifar_search_dirs`] (e.g. `data_dir/cifar-10-batches-bin`, the folder of
    /// the official binary tarball).
    pub fn load(kind: DatasetKind, data_dir: &Path, device: Device) -> Result<Dataset, DataError> {
        if kind.is_cifar() {
            return cifar::load(kind, data_dir, device);
        }
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

    /// Holds out a seeded random subset of `n_val` training examples as a validation split.
    ///
    /// Returns `(train, val)`: the remaining training examples and the held-out ones, both in
    /// their original order, disjoint, with sizes adding up to `self.train.len()`. The subset
    /// depends only on `(n_val, seed, train size)`: one host-side permutation, moved to the
    /// device once. The test split is untouched.
    ///
    /// # Panics
    /// If `n_val > self.train.len()`; see [`Dataset::try_split_validation`].
    pub fn split_validation(&self, n_val: usize, seed: u64) -> (Split, Split) {
        self.try_split_validation(n_val, seed)
            .unwrap_or_else(|e| panic!("split_validation: {e}"))
    }

    /// [`Dataset::split_validation`], with an error instead of a panic.
    pub fn try_split_validation(
        &self,
        n_val: usize,
        seed: u64,
    ) -> Result<(Split, Split), DataError> {
        let n_train = self.train.len();
        if n_val > n_train {
            return Err(DataError::ValidationTooLarge { n_val, n_train });
        }
        // A stream of its own: "epoch" u64::MAX is never used by training shuffles.
        let perm = permutation(n_train, seed ^ 0x7661_6c69_6461_7465, u64::MAX);
        let (val, train) = perm.split_at(n_val);
        let (mut val, mut train) = (val.to_vec(), train.to_vec());
        val.sort_unstable();
        train.sort_unstable();
        let device = self.train.device();
        let pick = |idx: &[i64]| -> Result<Split, DataError> {
            let idx = Tensor::f_from_slice(idx)?.f_to_device(device)?;
            Ok(Split {
                images: self.train.images.f_index_select(0, &idx)?,
                labels: self.train.labels.f_index_select(0, &idx)?,
            })
        };
        Ok((pick(&train)?, pick(&val)?))
    }

    /// The data set with `pad` pixels added on each side of every image, train and test
    /// (`[N, C, H, W]` → `[N, C, H + 2·pad, W + 2·pad]`); `pad = 0` is the identity.
    ///
    /// Why: VGG-11/16/19 halve their input five times and need H and W divisible by 32, and
    /// the papers that run VGG (or LeNet-5) on MNIST-sized data pad the 28×28 images to
    /// 32×32 (`transforms.Pad(2)` before `ToTensor` and `Normalize` in PyTorch), which
    /// keeps every pixel and adds only background. The added pixels are **black** pixels
    /// (raw value 0) as normalisation maps them, `-mean[c] / std[c]`, so the result is
    /// exactly `normalise(pad(raw))` and the border is the MNIST family's own background —
    /// unlike [`crate::Augment`]'s crop, which pads normalised tensors with 0.
    pub fn padded(self, pad: usize) -> Result<Dataset, DataError> {
        if pad == 0 {
            return Ok(self);
        }
        let (mean, std) = self.kind.channel_stats();
        let black: Vec<f64> = mean.iter().zip(&std).map(|(m, s)| -m / s).collect();
        Ok(Dataset {
            kind: self.kind,
            train: self.train.padded(pad, &black)?,
            test: self.test.padded(pad, &black)?,
        })
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

/// Test assertion: `err` matches `pattern`, and its message contains each of `parts`
/// (`assert_error!(err, DataError::X { field: 1, .. } => "names", &this)`).
#[cfg(test)]
macro_rules! assert_error {
    ($err:expr, $pattern:pat $(=> $($part:expr),* $(,)?)?) => {{
        let err = &$err;
        assert!(matches!(err, $pattern), "{err:?}");
        let msg = err.to_string();
        $($(assert!(msg.contains($part), "{msg}");)*)?
        let _ = msg;
    }};
}
#[cfg(test)]
pub(crate) use assert_error;

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
        for (alias, kind) in [
            ("CIFAR-10", DatasetKind::Cifar10),
            ("cifar_100", DatasetKind::Cifar100),
            ("fashionmnist", DatasetKind::FashionMnist),
        ] {
            assert_eq!(DatasetKind::from_name(alias).unwrap(), kind);
        }
        let msg = DatasetKind::from_name("cifar").unwrap_err().to_string();
        assert!(
            msg.contains("\"cifar\"") && msg.contains("mnist, fashion-mnist, cifar10, cifar100"),
            "{msg}"
        );
    }

    #[test]
    fn per_kind_constants() {
        for kind in DatasetKind::ALL {
            let (mean, std) = kind.channel_stats();
            assert_eq!((mean.len(), std.len()), (kind.channels(), kind.channels()));
            assert!((mean.iter().sum::<f64>() / mean.len() as f64 - kind.mean()).abs() < 1e-12);
            assert!((std.iter().sum::<f64>() / std.len() as f64 - kind.std()).abs() < 1e-12);
            let n_train: usize = kind.train_files().len();
            assert_eq!(kind.file_names()[0], kind.train_files()[0]);
            assert!(n_train >= 1);
        }
        assert_eq!(
            DatasetKind::Cifar10.channel_stats(),
            (vec![0.4914, 0.4822, 0.4465], vec![0.2023, 0.1994, 0.2010])
        );
        assert_eq!(
            DatasetKind::Cifar100.channel_stats(),
            (vec![0.5071, 0.4865, 0.4409], vec![0.2673, 0.2564, 0.2762])
        );
        assert_eq!(
            DatasetKind::Mnist.channel_stats(),
            (vec![0.1307], vec![0.3081])
        );
        assert_eq!(DatasetKind::Cifar100.num_classes(), 100);
        assert_eq!(DatasetKind::Cifar10.num_classes(), 10);
        assert_eq!(DatasetKind::Cifar10.image_shape(), [3, 32, 32]);
        assert_eq!(DatasetKind::FashionMnist.image_shape(), [1, 28, 28]);
    }

    #[test]
    fn validation_split_is_disjoint_and_complete() {
        let n = 50;
        // Labels are example ids, images carry the id too, so rows can be traced.
        let ids = Tensor::arange(n, (Kind::Int64, Device::Cpu));
        let ds = Dataset {
            kind: DatasetKind::Mnist,
            train: Split {
                images: ids
                    .to_kind(Kind::Float)
                    .view([n, 1, 1, 1])
                    .repeat([1, 1, 2, 2]),
                labels: ids.shallow_clone(),
            },
            test: Split {
                images: Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu)),
                labels: Tensor::zeros([1], (Kind::Int64, Device::Cpu)),
            },
        };
        let (train, val) = ds.split_validation(12, 5);
        assert_eq!((train.len(), val.len()), (38, 12));
        let tr = Vec::<i64>::try_from(&train.labels).unwrap();
        let va = Vec::<i64>::try_from(&val.labels).unwrap();
        let mut all: Vec<i64> = tr.iter().chain(&va).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        assert!(tr.windows(2).all(|w| w[0] < w[1]) && va.windows(2).all(|w| w[0] < w[1]));
        // Images travel with their labels.
        let px =
            Vec::<f32>::try_from(&val.images.select(2, 1).select(2, 1).flatten(0, -1)).unwrap();
        assert_eq!(px, va.iter().map(|&v| v as f32).collect::<Vec<_>>());
        // Seeded: same seed, same subset; another seed, another one; not simply the first 12.
        let (_, again) = ds.split_validation(12, 5);
        assert_eq!(Vec::<i64>::try_from(&again.labels).unwrap(), va);
        let (_, other) = ds.split_validation(12, 6);
        assert_ne!(Vec::<i64>::try_from(&other.labels).unwrap(), va);
        assert_ne!(va, (0..12).collect::<Vec<_>>());
        // Edge cases.
        assert_eq!(ds.split_validation(0, 1).1.len(), 0);
        assert_eq!(ds.split_validation(50, 1).0.len(), 0);
        let err = ds.try_split_validation(51, 1).unwrap_err();
        assert!(matches!(
            err,
            DataError::ValidationTooLarge {
                n_val: 51,
                n_train: 50
            }
        ));
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
        for kind in [DatasetKind::Mnist, DatasetKind::FashionMnist] {
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

    /// Padding by 2 makes 28×28 images 32×32: the original in the middle, unchanged, and
    /// every added pixel the normalised value of a black pixel, per channel; 0 changes
    /// nothing. The images are random values above 1, so no original pixel is black.
    #[test]
    fn padding_surrounds_the_images_with_black_pixels() {
        let _g = ap_testkit::torch_lock();
        for (kind, c, side) in [
            (DatasetKind::FashionMnist, 1, 28),
            (DatasetKind::Cifar10, 3, 32),
        ] {
            let images =
                |n: i64| Tensor::rand([n, c, side, side], (Kind::Float, Device::Cpu)) + 1.0;
            let labels = |n: i64| Tensor::zeros([n], (Kind::Int64, Device::Cpu));
            let ds = Dataset {
                kind,
                train: Split {
                    images: images(4),
                    labels: labels(4),
                },
                test: Split {
                    images: images(2),
                    labels: labels(2),
                },
            };
            let same = ds.train.images.shallow_clone();
            let ds = ds.padded(0).unwrap();
            assert!(ds.train.images.equal(&same), "pad 0 is the identity");
            assert_eq!(ds.train.images.size(), [4, c, side, side]);
            let (train, test) = (ds.train.images.copy(), ds.test.images.copy());
            let padded = ds.padded(2).unwrap();
            let big = side + 4;
            assert_eq!(padded.train.images.size(), [4, c, big, big]);
            assert_eq!(padded.test.images.size(), [2, c, big, big]);
            assert_eq!(padded.train.labels.size(), [4]);
            assert_eq!(kind.padded_image_shape(2), [c, big, big]);
            for (before, after) in [(&train, &padded.train.images), (&test, &padded.test.images)] {
                let middle = after.narrow(2, 2, side).narrow(3, 2, side);
                assert!(
                    middle.equal(before),
                    "{kind}: the original sits in the middle"
                );
                let border = after.ones_like();
                let _ = border.narrow(2, 2, side).narrow(3, 2, side).fill_(0.0);
                let border = border.to_kind(Kind::Bool);
                for ch in 0..c {
                    let want = -kind.channel_mean()[ch as usize] / kind.channel_std()[ch as usize];
                    let values = after.select(1, ch).masked_select(&border.select(1, ch));
                    assert_eq!(
                        values.numel() as i64,
                        after.size()[0] * (big * big - side * side)
                    );
                    let off = f64::try_from((values - want).abs().max()).unwrap();
                    assert!(off < 1e-6, "{kind} channel {ch}: border off black by {off}");
                }
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
        let images = fx.path(DatasetKind::Mnist, 0).display().to_string();
        assert_error!(err, DataError::CountMismatch { n_images: 5, n_labels: 4, .. } => &images, &labels, '5', '4');
    }

    #[test]
    fn label_out_of_range_names_file_index_value() {
        let fx = Fixture::new(DatasetKind::FashionMnist, true);
        let labels = fx.write(DatasetKind::FashionMnist, 3, &[3], &[1, 10, 200], true);
        let err = fx.load(DatasetKind::FashionMnist).unwrap_err();
        assert_error!(err, DataError::LabelOutOfRange { index: 1, value: 10, .. } => &labels, "index 1", "10");
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
