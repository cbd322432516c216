use std::path::PathBuf;

/// Everything that can go wrong while reading, validating or batching a data set.
///
/// Each variant that concerns a file names it, so a message alone is enough to find the
/// culprit.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading (or gunzipping) a file failed.
    #[error("{file}: {err}")]
    Io {
        /// The file being read.
        file: String,
        /// The underlying I/O or decompression error.
        #[source]
        err: std::io::Error,
    },
    /// A data file is not in the data directory.
    #[error("missing data file {}; run `cargo xtask setup` to fetch the data sets", path.display())]
    MissingFile {
        /// The path that was expected (the raw name; the `.gz` variant was tried too).
        path: PathBuf,
    },
    /// The first two bytes of an IDX file are not zero.
    #[error("{file}: not an IDX file (magic bytes {found:02x?}, expected [00, 00])")]
    BadMagic {
        /// The file being parsed.
        file: String,
        /// The first two bytes found.
        found: [u8; 2],
    },
    /// The IDX element type is not `0x08` (unsigned byte).
    #[error(
        "{file}: unsupported IDX element type code 0x{code:02x} (only 0x08 = u8 is supported)"
    )]
    UnsupportedType {
        /// The file being parsed.
        file: String,
        /// The type code found in the header.
        code: u8,
    },
    /// The IDX header is malformed (too short, zero dimensions, overflowing size).
    #[error("{file}: bad IDX header: {reason}")]
    BadHeader {
        /// The file being parsed.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload is truncated or has trailing bytes.
    #[error("{file}: IDX dims {dims:?} need {expected} data bytes, but the file has {actual}")]
    SizeMismatch {
        /// The file being parsed.
        file: String,
        /// The dimensions from the header.
        dims: Vec<usize>,
        /// Bytes implied by the dimensions.
        expected: usize,
        /// Bytes actually present after the header.
        actual: usize,
    },
    /// An array has the wrong shape for its role (e.g. images not `[N, 28, 28]`).
    #[error("{file}: expected dims {expected}, found {actual:?}")]
    Shape {
        /// The file whose array has the wrong shape.
        file: String,
        /// A description of the expected dims.
        expected: String,
        /// The dims found.
        actual: Vec<usize>,
    },
    /// Image and label files disagree on the number of examples.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The image file.
        images: String,
        /// The label file.
        labels: String,
        /// Number of images.
        n_images: usize,
        /// Number of labels.
        n_labels: usize,
    },
    /// A label is not a valid class index.
    #[error("{file}: label at index {index} is {value}, but there are only {num_classes} classes")]
    LabelOutOfRange {
        /// The label file.
        file: String,
        /// Position of the bad label.
        index: usize,
        /// Its value.
        value: u8,
        /// Number of classes of the data set.
        num_classes: usize,
    },
    /// A CIFAR file is not where it was looked for.
    #[error(
        "missing CIFAR file {} (looked in {searched}); download the binary version from \
         https://www.cs.toronto.edu/~kriz/cifar.html and pass its folder with --data-dir",
        path.display()
    )]
    MissingCifarFile {
        /// The file that was expected.
        path: PathBuf,
        /// The directories searched, comma separated.
        searched: String,
    },
    /// A CIFAR file's size is not a positive multiple of its record size.
    #[error(
        "{file}: size {size} bytes is not a positive multiple of the CIFAR record size \
         ({record} bytes)"
    )]
    RecordSize {
        /// The file being read.
        file: String,
        /// Its size in bytes.
        size: usize,
        /// The record size of the data set (3073 for CIFAR-10, 3074 for CIFAR-100).
        record: usize,
    },
    /// A CIFAR record holds an out-of-range label byte.
    #[error("{file}: record {record}: {field} is {value}, must be below {limit}")]
    RecordLabel {
        /// The file being read.
        file: String,
        /// Index of the record within the file.
        record: usize,
        /// Which label byte (`label`, `coarse label` or `fine label`).
        field: &'static str,
        /// The value found.
        value: u8,
        /// The number of classes for that field.
        limit: usize,
    },
    /// A validation split larger than the training split was requested.
    #[error("cannot hold out {n_val} validation examples from a training split of {n_train}")]
    ValidationTooLarge {
        /// Requested validation size.
        n_val: usize,
        /// Size of the training split.
        n_train: usize,
    },
    /// A data set name that is not known.
    #[error("unknown data set {name:?}; valid names: {valid}")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The valid names, comma separated.
        valid: String,
    },
    /// A batch size of zero was requested.
    #[error("batch size must be at least 1")]
    ZeroBatchSize,
    /// A libtorch operation failed (e.g. device unavailable).
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}
