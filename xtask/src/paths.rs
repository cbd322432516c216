//! Where xtask keeps its caches: the cache root, the libtorch virtualenv and the data sets.
//!
//! The resolution functions take the environment lookup as a parameter so that they can be
//! tested without touching the process environment.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The PyTorch version whose libtorch the workspace builds against (pip package `torch`).
pub const TORCH_VERSION: &str = "2.11.0";

/// Name of the stamp file written into the venv once the torch install is complete.
pub const STAMP_FILE: &str = ".ap-torch-complete";

/// A library file whose presence shows a usable libtorch in `<torch dir>/lib`.
pub const LIBTORCH_MARKER: &str = "libtorch_cpu.so";

/// An environment lookup: the value of a variable, or `None` when unset or empty.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Looks a variable up in the process environment; empty values count as unset.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var_os(key)
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.is_empty())
}

/// The resolved cache locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Root of all caches (`$AP_CACHE_DIR`, `$XDG_CACHE_HOME/ap-prune` or `~/.cache/ap-prune`).
    pub cache_root: PathBuf,
    /// The python virtualenv that holds the pip `torch` package.
    pub torch_venv: PathBuf,
    /// The data directory (`$AP_DATA_DIR` or `<cache root>/data`).
    pub data_dir: PathBuf,
    /// A user-provided libtorch (`$LIBTORCH`, only when `$LIBTORCH/lib` exists).
    pub user_libtorch: Option<PathBuf>,
}

impl Paths {
    /// Resolves all locations from an environment lookup and a directory-existence check.
    pub fn resolve(env: EnvLookup<'_>, is_dir: &dyn Fn(&Path) -> bool) -> Result<Paths> {
        let cache_root = cache_root(env)?;
        Ok(Paths {
            torch_venv: torch_venv(env, &cache_root),
            data_dir: data_dir(env, &cache_root),
            user_libtorch: user_libtorch(env, is_dir),
            cache_root,
        })
    }

    /// Resolves from the process environment, making relative paths absolute.
    pub fn from_process_env() -> Result<Paths> {
        let p = Paths::resolve(&process_env, &|p: &Path| p.is_dir())?;
        Ok(Paths {
            cache_root: absolute(&p.cache_root)?,
            torch_venv: absolute(&p.torch_venv)?,
            data_dir: absolute(&p.data_dir)?,
            user_libtorch: p.user_libtorch.as_deref().map(absolute).transpose()?,
        })
    }

    /// `<venv>/.ap-torch-complete`: written once the torch install has been verified.
    pub fn stamp_path(&self) -> PathBuf {
        self.torch_venv.join(STAMP_FILE)
    }

    /// `<venv>.lock`: held while installing torch into the venv.
    pub fn lock_path(&self) -> PathBuf {
        let mut s = self.torch_venv.clone().into_os_string();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Directory of the MNIST IDX files.
    pub fn mnist_dir(&self) -> PathBuf {
        self.data_dir.join("mnist")
    }

    /// Directory of the Fashion-MNIST `.gz` files.
    pub fn fashion_mnist_dir(&self) -> PathBuf {
        self.data_dir.join("fashion-mnist")
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}

/// The cache root: `$AP_CACHE_DIR`, else `$XDG_CACHE_HOME/ap-prune`, else `$HOME/.cache/ap-prune`.
pub fn cache_root(env: EnvLookup<'_>) -> Result<PathBuf> {
    if let Some(dir) = env("AP_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        return Ok(Path::new(&xdg).join("ap-prune"));
    }
    if let Some(home) = env("HOME") {
        return Ok(Path::new(&home).join(".cache").join("ap-prune"));
    }
    bail!("cannot find a cache directory: set AP_CACHE_DIR (or HOME / XDG_CACHE_HOME)")
}

/// The torch virtualenv: `$AP_TORCH_VENV`, else `<cache root>/torch-<TORCH_VERSION>`.
pub fn torch_venv(env: EnvLookup<'_>, cache_root: &Path) -> PathBuf {
    match env("AP_TORCH_VENV") {
        Some(v) => PathBuf::from(v),
        None => cache_root.join(format!("torch-{TORCH_VERSION}")),
    }
}

/// The data directory: `$AP_DATA_DIR`, else `<cache root>/data`.
pub fn data_dir(env: EnvLookup<'_>, cache_root: &Path) -> PathBuf {
    match env("AP_DATA_DIR") {
        Some(v) => PathBuf::from(v),
        None => cache_root.join("data"),
    }
}

/// `$LIBTORCH` when it is set and `$LIBTORCH/lib` is a directory.
pub fn user_libtorch(env: EnvLookup<'_>, is_dir: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    let dir = PathBuf::from(env("LIBTORCH")?);
    is_dir(&dir.join("lib")).then_some(dir)
}

/// Finds `<venv>/lib/python3*/site-packages/torch` (the first match in name order).
pub fn find_torch_dir(venv: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages").join("torch"))
        .filter(|p| p.is_dir())
        .collect();
    candidates.sort();
    candidates.into_iter().next()
}

/// The torch dir of a completed install: the stamp holds [`TORCH_VERSION`] and
/// `<torch dir>/lib/libtorch_cpu.so` exists.
pub fn installed_torch_dir(paths: &Paths) -> Option<PathBuf> {
    let stamp = std::fs::read_to_string(paths.stamp_path()).ok()?;
    if stamp.trim() != TORCH_VERSION {
        return None;
    }
    let dir = find_torch_dir(&paths.torch_venv)?;
    dir.join("lib")
        .join(LIBTORCH_MARKER)
        .is_file()
        .then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn cache_root_precedence() {
        let all = env_of(&[
            ("AP_CACHE_DIR", "/a"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(cache_root(&all).unwrap(), PathBuf::from("/a"));
        let xdg = env_of(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_root(&xdg).unwrap(), PathBuf::from("/x/ap-prune"));
        let home = env_of(&[("HOME", "/h")]);
        assert_eq!(
            cache_root(&home).unwrap(),
            PathBuf::from("/h/.cache/ap-prune")
        );
        let none = env_of(&[]);
        let err = cache_root(&none).unwrap_err().to_string();
        assert!(err.contains("AP_CACHE_DIR"), "{err}");
    }

    #[test]
    fn venv_and_data_defaults_and_overrides() {
        let env = env_of(&[("HOME", "/h")]);
        let p = Paths::resolve(&env, &|_| false).unwrap();
        assert_eq!(p.cache_root, PathBuf::from("/h/.cache/ap-prune"));
        assert_eq!(
            p.torch_venv,
            PathBuf::from("/h/.cache/ap-prune/torch-2.11.0")
        );
        assert_eq!(p.data_dir, PathBuf::from("/h/.cache/ap-prune/data"));
        assert_eq!(p.user_libtorch, None);
        assert_eq!(
            p.lock_path(),
            PathBuf::from("/h/.cache/ap-prune/torch-2.11.0.lock")
        );
        assert_eq!(
            p.stamp_path(),
            PathBuf::from("/h/.cache/ap-prune/torch-2.11.0/.ap-torch-complete")
        );
        assert_eq!(
            p.mnist_dir(),
            PathBuf::from("/h/.cache/ap-prune/data/mnist")
        );
        assert_eq!(
            p.fashion_mnist_dir(),
            PathBuf::from("/h/.cache/ap-prune/data/fashion-mnist")
        );

        let env = env_of(&[
            ("HOME", "/h"),
            ("AP_CACHE_DIR", "/c"),
            ("AP_TORCH_VENV", "/venv"),
            ("AP_DATA_DIR", "/d"),
        ]);
        let p = Paths::resolve(&env, &|_| false).unwrap();
        assert_eq!(p.cache_root, PathBuf::from("/c"));
        assert_eq!(p.torch_venv, PathBuf::from("/venv"));
        assert_eq!(p.data_dir, PathBuf::from("/d"));

        let env = env_of(&[("AP_CACHE_DIR", "/c")]);
        let p = Paths::resolve(&env, &|_| false).unwrap();
        assert_eq!(p.torch_venv, PathBuf::from("/c/torch-2.11.0"));
        assert_eq!(p.data_dir, PathBuf::from("/c/data"));
    }

    #[test]
    fn libtorch_respected_only_when_lib_exists() {
        let env = env_of(&[("HOME", "/h"), ("LIBTORCH", "/opt/libtorch")]);
        let yes = Paths::resolve(&env, &|p| p == Path::new("/opt/libtorch/lib")).unwrap();
        assert_eq!(yes.user_libtorch, Some(PathBuf::from("/opt/libtorch")));
        let no = Paths::resolve(&env, &|_| false).unwrap();
        assert_eq!(no.user_libtorch, None);
    }

    #[test]
    fn finds_torch_dir_and_requires_stamp() {
        let tmp = tempfile::tempdir().unwrap();
        let venv = tmp.path().join("venv");
        let paths = Paths {
            cache_root: tmp.path().to_path_buf(),
            torch_venv: venv.clone(),
            data_dir: tmp.path().join("data"),
            user_libtorch: None,
        };
        assert_eq!(find_torch_dir(&venv), None);
        let torch = venv.join("lib/python3.11/site-packages/torch");
        std::fs::create_dir_all(torch.join("lib")).unwrap();
        std::fs::create_dir_all(venv.join("lib/perl5")).unwrap();
        assert_eq!(find_torch_dir(&venv), Some(torch.clone()));

        // No stamp, no library: not installed.
        assert_eq!(installed_torch_dir(&paths), None);
        std::fs::write(torch.join("lib").join(LIBTORCH_MARKER), b"").unwrap();
        assert_eq!(installed_torch_dir(&paths), None);
        // Stamp for another version: not installed.
        std::fs::write(paths.stamp_path(), "2.0.0\n").unwrap();
        assert_eq!(installed_torch_dir(&paths), None);
        std::fs::write(paths.stamp_path(), format!("{TORCH_VERSION}\n")).unwrap();
        assert_eq!(installed_torch_dir(&paths), Some(torch.clone()));
        // Stamp but the library vanished: not installed.
        std::fs::remove_file(torch.join("lib").join(LIBTORCH_MARKER)).unwrap();
        assert_eq!(installed_torch_dir(&paths), None);
    }
}
