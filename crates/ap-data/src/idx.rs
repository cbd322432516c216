//! Strict reader for the IDX format (as used by MNIST and Fashion-MNIST).
//!
//! Layout: two zero bytes, a type byte (`0x08` = unsigned byte, the only one supported), a
//! dimension count, that many big-endian `u32` sizes, then the data in row-major order.
//! Files may be gzip-compressed; compression is detected by content (`1f 8b`), not by name, so
//! a renamed file still reads.

use std::io::Read;
use std::path::Path;

use crate::DataError;

/// IDX type code for unsigned bytes.
const TYPE_U8: u8 = 0x08;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A parsed IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Row-major data; its length is exactly the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads and parses an IDX file, gunzipping it first if it is gzip-compressed.
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray, DataError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let io = |err| DataError::Io {
        file: file.clone(),
        err,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        parse_idx(&out, &file)
    } else {
        parse_idx(&raw, &file)
    }
}

/// Parses uncompressed IDX bytes; `source` names their origin in error messages.
pub fn parse_idx(bytes: &[u8], source: &str) -> Result<IdxArray, DataError> {
    let header = |reason: String| DataError::BadHeader {
        file: source.to_owned(),
        reason,
    };
    if bytes.len() < 4 {
        return Err(header(format!("{} bytes, need at least 4", bytes.len())));
    }
    if bytes[..2] != [0, 0] {
        return Err(DataError::BadMagic {
            file: source.to_owned(),
            found: [bytes[0], bytes[1]],
        });
    }
    if bytes[2] != TYPE_U8 {
        return Err(DataError::UnsupportedType {
            file: source.to_owned(),
            code: bytes[2],
        });
    }
    let ndims = usize::from(bytes[3]);
    if ndims == 0 {
        return Err(header("zero dimensions".into()));
    }
    let data_start = 4 + 4 * ndims;
    let dim_bytes = bytes.get(4..data_start).ok_or_else(|| {
        header(format!(
            "{ndims} dims need {data_start} header bytes, file has {}",
            bytes.len()
        ))
    })?;
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| header(format!("dims {dims:?} overflow usize")))?;
    let data = &bytes[data_start..];
    if data.len() != expected {
        return Err(DataError::SizeMismatch {
            file: source.to_owned(),
            dims,
            expected,
            actual: data.len(),
        });
    }
    Ok(IdxArray {
        dims,
        data: data.to_vec(),
    })
}

/// Encodes a `u8` array as IDX bytes (the inverse of [`parse_idx`]).
///
/// Used by tests (here and in other crates) to build small synthetic data sets on disk.
///
/// # Panics
/// If `dims` is empty or longer than 255, a dim exceeds `u32::MAX`, or `data.len()` is not
/// the product of `dims` — these are programming errors in the caller, not bad input files.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    assert!(
        !dims.is_empty() && dims.len() <= 255,
        "IDX needs 1..=255 dims"
    );
    assert_eq!(
        dims.iter().product::<usize>(),
        data.len(),
        "data length must match dims"
    );
    let mut out = vec![0, 0, TYPE_U8, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&u32::try_from(d).expect("dim fits in u32").to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn round_trip_raw_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..24).collect();
        let bytes = encode_idx(&[2, 3, 4], &data);
        // The gzip copy deliberately has no `.gz` suffix: detection is by content.
        for (name, content) in [("raw", bytes.clone()), ("packed", gzip(&bytes))] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let arr = read_idx(&path).unwrap();
            assert_eq!(
                arr,
                IdxArray {
                    dims: vec![2, 3, 4],
                    data: data.clone()
                }
            );
        }
    }

    #[test]
    fn one_dim_and_empty() {
        assert_eq!(
            parse_idx(&encode_idx(&[3], &[7, 8, 9]), "x").unwrap().data,
            vec![7, 8, 9]
        );
        assert_eq!(
            parse_idx(&encode_idx(&[0, 28], &[]), "x").unwrap().dims,
            vec![0, 28]
        );
    }

    fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> (std::path::PathBuf, String) {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let s = path.display().to_string();
        (path, s)
    }

    #[test]
    fn wrong_magic() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_idx(&[2], &[1, 2]);
        bytes[1] = 7;
        let (path, name) = write_bytes(dir.path(), "bad-magic", &bytes);
        let err = read_idx(&path).unwrap_err();
        assert!(
            matches!(err, DataError::BadMagic { found: [0, 7], .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&name), "{err}");
    }

    #[test]
    fn unsupported_type_names_code() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_idx(&[2], &[1, 2]);
        bytes[2] = 0x0d; // float
        let (path, name) = write_bytes(dir.path(), "floats", &bytes);
        let err = read_idx(&path).unwrap_err();
        assert!(
            matches!(err, DataError::UnsupportedType { code: 0x0d, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&name) && msg.contains("0x0d"), "{msg}");
    }

    #[test]
    fn truncated_and_trailing() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode_idx(&[2, 5], &[3; 10]);
        let mut long = bytes.clone();
        long.push(0);
        for (label, content, actual) in [
            ("short", &bytes[..bytes.len() - 3], 7),
            ("long", &long[..], 11),
        ] {
            // Gzipped too, to check sizes are validated after decompression.
            for gz in [false, true] {
                let content = if gz { gzip(content) } else { content.to_vec() };
                let (path, name) = write_bytes(dir.path(), label, &content);
                let err = read_idx(&path).unwrap_err();
                assert!(
                    matches!(err, DataError::SizeMismatch { expected: 10, actual: a, .. } if a == actual),
                    "{err:?}"
                );
                let msg = err.to_string();
                assert!(
                    msg.contains(&name) && msg.contains("10") && msg.contains(&actual.to_string()),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn bad_headers() {
        for bytes in [&[0u8, 0][..], &[0, 0, 8, 0], &[0, 0, 8, 2, 0, 0, 0, 1]] {
            let err = parse_idx(bytes, "hdr-file").unwrap_err();
            assert!(matches!(err, DataError::BadHeader { .. }), "{err:?}");
            assert!(err.to_string().contains("hdr-file"));
        }
    }

    #[test]
    fn missing_file_and_corrupt_gzip_are_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_idx(dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }) && err.to_string().contains("nope"));
        let (path, name) = write_bytes(dir.path(), "corrupt.gz", &[0x1f, 0x8b, 1, 2, 3]);
        let err = read_idx(path).unwrap_err();
        assert!(
            matches!(err, DataError::Io { .. }) && err.to_string().contains(&name),
            "{err}"
        );
    }
}
