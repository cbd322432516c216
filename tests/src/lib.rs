//! Helpers for the workspace-level tests in `tests/tests/`: finding the Python that holds
//! torch and running the independent references of `tests/reference/prune_ref.py`.
//!
//! A missing Python is a panic that says what to run, never a skipped (silently passing)
//! test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// MNIST from the data directory (`AP_DATA_DIR`, else the cache), on the CPU; a missing
/// data set is a panic that says what to run (`cargo xtask test` installs it first).
pub fn mnist() -> ap_data::Dataset {
    let dir = ap_data::default_data_dir();
    ap_data::Dataset::load(ap_data::DatasetKind::Mnist, &dir, tch::Device::Cpu)
        .unwrap_or_else(|e| panic!("{e} (data dir {}: run `cargo xtask setup`)", dir.display()))
}

/// The torch version `cargo xtask setup` installs (its venv is `torch-<version>`).
const TORCH_VERSION: &str = "2.11.0";

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `<venv>` from `LIBTORCH = <venv>/lib/pythonX.Y/site-packages/torch` (a pip-installed
/// libtorch, as `cargo xtask setup` makes); `None` for a standalone libtorch.
fn venv_of_libtorch(libtorch: &Path) -> Option<PathBuf> {
    let site = libtorch.parent()?;
    let py = site.parent()?;
    let lib = py.parent()?;
    let ok = libtorch.file_name()? == "torch"
        && site.file_name()? == "site-packages"
        && py.file_name()?.to_str()?.starts_with("python")
        && lib.file_name()? == "lib";
    ok.then(|| lib.parent().map(Path::to_path_buf)).flatten()
}

/// The default venv of `cargo xtask setup`: `<cache root>/torch-<version>`, the cache root
/// being `$AP_CACHE_DIR`, else `$XDG_CACHE_HOME/ap-prune`, else `$HOME/.cache/ap-prune`.
fn default_venv() -> Option<PathBuf> {
    let root = env_path("AP_CACHE_DIR")
        .or_else(|| env_path("XDG_CACHE_HOME").map(|d| d.join("ap-prune")))
        .or_else(|| env_path("HOME").map(|h| h.join(".cache").join("ap-prune")))?;
    Some(root.join(format!("torch-{TORCH_VERSION}")))
}

/// The Python interpreter with torch for the reference implementations:
/// `$AP_PYTHON` if set, else `$AP_TORCH_VENV/bin/python`, else the venv `$LIBTORCH` lies
/// in, else `cargo xtask setup`'s venv (`~/.cache/ap-prune/torch-2.11.0/bin/python`).
///
/// # Panics
/// When the chosen interpreter does not exist, naming every place looked at and
/// `cargo xtask setup`.
pub fn reference_python() -> PathBuf {
    if let Some(p) = env_path("AP_PYTHON") {
        assert!(
            p.exists(),
            "AP_PYTHON={} does not exist: point it at a Python with torch, or unset it \
             and run `cargo xtask setup`",
            p.display()
        );
        return p;
    }
    let mut tried = vec![];
    let candidates = [
        env_path("AP_TORCH_VENV").map(|v| ("AP_TORCH_VENV", v)),
        env_path("LIBTORCH")
            .and_then(|l| venv_of_libtorch(&l))
            .map(|v| ("LIBTORCH", v)),
        default_venv().map(|v| ("the default venv", v)),
    ];
    for (source, venv) in candidates.into_iter().flatten() {
        let py = venv.join("bin").join("python");
        if py.exists() {
            return py;
        }
        tried.push(format!("{} (from {source})", py.display()));
    }
    panic!(
        "no Python with torch for the reference implementations; looked at: {}. \
         Run `cargo xtask setup` (installs torch {TORCH_VERSION} into a venv), or set \
         AP_PYTHON or AP_TORCH_VENV",
        if tried.is_empty() {
            "nothing (HOME is not set)".to_string()
        } else {
            tried.join(", ")
        }
    )
}

/// `tests/reference/prune_ref.py`.
pub fn reference_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("reference")
        .join("prune_ref.py")
}

/// Runs `prune_ref.py <case> <input> <config.json> <output>`: the config is written next
/// to `output`. Inputs and outputs are safetensors files.
///
/// # Panics
/// When the script cannot be started or exits with an error (its stderr is in the
/// message), or writes no output.
pub fn run_reference(case: &str, input: &Path, config: &serde_json::Value, output: &Path) {
    let cfg = output.with_extension("config.json");
    std::fs::write(&cfg, serde_json::to_vec_pretty(config).expect("JSON"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", cfg.display()));
    let python = reference_python();
    let script = reference_script();
    let out = Command::new(&python)
        .arg(&script)
        .arg(case)
        .arg(input)
        .arg(&cfg)
        .arg(output)
        .output()
        .unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "reference `{case}` failed ({}): {} {} {case} {} {} {}\n--- stderr ---\n{}",
        out.status,
        python.display(),
        script.display(),
        input.display(),
        cfg.display(),
        output.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        output.exists(),
        "reference `{case}` wrote no {}",
        output.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn venv_from_a_pip_libtorch() {
        assert_eq!(
            venv_of_libtorch(Path::new("/v/lib/python3.11/site-packages/torch")),
            Some(PathBuf::from("/v"))
        );
        assert_eq!(venv_of_libtorch(Path::new("/opt/libtorch")), None);
    }
}
