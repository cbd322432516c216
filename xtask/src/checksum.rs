//! sha256 verification and verified, atomic installation of fetched files.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Lower-case hex sha256 of a byte slice.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lower-case hex sha256 of a file's contents, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `data` has sha256 `expected`; the error names the file, both sums and the origin.
pub fn verify_sha256(name: &str, data: &[u8], expected: &str, origin: &str) -> Result<()> {
    let actual = sha256_hex(data);
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        bail!(
            "checksum mismatch for {name}: expected sha256 {expected}, got {actual} (from {origin})"
        )
    }
}

/// The state of a file on disk compared with its expected sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Present with the expected sum.
    Good,
    /// Not present.
    Missing,
    /// Present with another sum (the actual one).
    Mismatch(String),
}

/// Compares the file at `path` against `expected`.
pub fn check_file(path: &Path, expected: &str) -> Result<FileState> {
    if !path.exists() {
        return Ok(FileState::Missing);
    }
    let actual = sha256_file(path)?;
    Ok(if actual.eq_ignore_ascii_case(expected) {
        FileState::Good
    } else {
        FileState::Mismatch(actual)
    })
}

/// Installs `data` at `dest` after verifying its sha256.
///
/// The bytes are checked first (nothing is written on a mismatch), then written to
/// `<dest>.tmp` and renamed into place. A `dest` that already has the expected sum is left
/// untouched. Returns `true` when the file was written.
pub fn install_verified(dest: &Path, data: &[u8], expected: &str, origin: &str) -> Result<bool> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dest.display().to_string());
    verify_sha256(&name, data, expected, origin)?;
    if check_file(dest, expected)? == FileState::Good {
        return Ok(false);
    }
    let tmp = tmp_path(dest);
    let write = || -> Result<()> {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()?;
        drop(f);
        // Re-read what landed on disk before it replaces anything.
        let on_disk = sha256_file(&tmp)?;
        if !on_disk.eq_ignore_ascii_case(expected) {
            bail!(
                "checksum mismatch for {name} after writing {}: expected sha256 {expected}, got {on_disk} (from {origin})",
                tmp.display()
            );
        }
        std::fs::rename(&tmp, dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(true)
}

fn tmp_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn sha256_known_vector() {
        assert_eq!(sha256_hex(b"abc"), ABC);
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), ABC);
    }

    #[test]
    fn verify_accepts_match_and_names_file_on_mismatch() {
        verify_sha256("f", b"abc", ABC, "test").unwrap();
        verify_sha256("f", b"abc", &ABC.to_uppercase(), "test").unwrap();
        let err = verify_sha256("train-images-idx3-ubyte", b"abd", ABC, "npm package x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
        assert!(err.contains(ABC), "{err}");
        assert!(err.contains(&sha256_hex(b"abd")), "{err}");
        assert!(err.contains("npm package x"), "{err}");
    }

    #[test]
    fn check_file_states() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        assert_eq!(check_file(&p, ABC).unwrap(), FileState::Missing);
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(check_file(&p, ABC).unwrap(), FileState::Good);
        std::fs::write(&p, b"xyz").unwrap();
        assert_eq!(
            check_file(&p, ABC).unwrap(),
            FileState::Mismatch(sha256_hex(b"xyz"))
        );
    }

    #[test]
    fn installs_good_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("data.bin");
        assert!(install_verified(&dest, b"abc", ABC, "test").unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert!(!tmp_path(&dest).exists());
        // Already good: not rewritten.
        assert!(!install_verified(&dest, b"abc", ABC, "test").unwrap());
    }

    #[test]
    fn good_file_not_overwritten_by_bad_fetch() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("data.bin");
        std::fs::write(&dest, b"abc").unwrap();
        let err = install_verified(&dest, b"corrupted", ABC, "somewhere")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.bin") && err.contains("somewhere"),
            "{err}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert!(!tmp_path(&dest).exists());
    }

    #[test]
    fn bad_file_replaced_by_good_fetch_and_kept_on_bad_fetch() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("data.bin");
        std::fs::write(&dest, b"old junk").unwrap();
        assert!(install_verified(&dest, b"still junk", ABC, "x").is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"old junk");
        assert!(install_verified(&dest, b"abc", ABC, "x").unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
    }
}
