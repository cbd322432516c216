//! gzip and `.tar.gz` handling (pure Rust, via `flate2` and `tar`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use flate2::read::GzDecoder;

/// Decompresses a gzip stream held in memory.
pub fn gunzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(data)
        .read_to_end(&mut out)
        .context("decompressing gzip data")?;
    Ok(out)
}

/// Extracts a `.tar.gz` / `.tgz` archive into `dest` (created if absent).
///
/// Entries that would land outside `dest` (absolute paths, `..`) are refused by `tar`.
pub fn extract_tgz(archive: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let f = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut ar = tar::Archive::new(GzDecoder::new(f));
    ar.set_preserve_permissions(false);
    ar.unpack(dest)
        .with_context(|| format!("extracting {} into {}", archive.display(), dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gunzip_roundtrip_and_error() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(gunzip(&gzip(&data)).unwrap(), data);
        assert!(gunzip(b"not gzip at all").is_err());
    }

    #[test]
    fn extracts_tgz_built_in_test() {
        let tmp = tempfile::tempdir().unwrap();
        let tgz = tmp.path().join("pkg.tgz");
        {
            let enc = GzEncoder::new(File::create(&tgz).unwrap(), Compression::default());
            let mut b = tar::Builder::new(enc);
            for (path, body) in [
                ("package/package.json", &b"{\"name\":\"x\"}"[..]),
                (
                    "package/data/t10k-labels-idx1-ubyte",
                    &[0u8, 0, 8, 1, 7, 2][..],
                ),
            ] {
                let mut h = tar::Header::new_gnu();
                h.set_size(body.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, path, body).unwrap();
            }
            b.into_inner().unwrap().finish().unwrap();
        }
        let out = tmp.path().join("out");
        extract_tgz(&tgz, &out).unwrap();
        assert_eq!(
            std::fs::read(out.join("package/data/t10k-labels-idx1-ubyte")).unwrap(),
            vec![0u8, 0, 8, 1, 7, 2]
        );
        assert_eq!(
            std::fs::read_to_string(out.join("package/package.json")).unwrap(),
            "{\"name\":\"x\"}"
        );
        // A corrupt archive is an error, not a panic.
        std::fs::write(&tgz, b"garbage").unwrap();
        assert!(extract_tgz(&tgz, &tmp.path().join("out2")).is_err());
    }
}
