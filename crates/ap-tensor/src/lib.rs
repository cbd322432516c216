//! tch glue shared by every other crate: device choice, seeding, named parameter
//! views over a `VarStore`, exact-count selection of the smallest scores across many
//! tensors, and atomic safetensors I/O.
//!
//! Nothing here knows about pruning methods; it is the small set of tensor operations
//! the rest of the workspace is built from.

use std::path::{Path, PathBuf};

use tch::{nn::VarStore, Device, Kind, TchError, Tensor};

mod field;
mod safetensors_io;
mod select;
pub use field::FieldError;
pub use safetensors_io::parse_safetensors;
pub use select::{
    first_n_with_ties, flat_cat, kth_smallest, select_smallest, select_smallest_per_tensor,
    smallest_n_at, split_like, Rank, SelectError, SAMPLE,
};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// A parameter named by the caller does not exist in the variable store.
    #[error("parameter `{name}` not found; available: {available}")]
    MissingParameter {
        /// The requested name.
        name: String,
        /// Comma-separated list of names that exist.
        available: String,
    },
    /// An unknown device string.
    #[error("unknown device `{0}`: use cpu, cuda, cuda:N or auto")]
    UnknownDevice(String),
    /// CUDA was requested but libtorch sees no CUDA device.
    #[error("device `{0}` requested but CUDA is not available to libtorch")]
    CudaUnavailable(String),
    /// A libtorch error, with the file involved when there is one.
    #[error("{context}: {source}")]
    Torch {
        /// What was being done (usually a file path).
        context: String,
        /// The underlying libtorch error.
        source: TchError,
    },
    /// A file that is not valid safetensors (truncated, damaged or edited): the file and
    /// what is wrong with it.
    #[error("{path}: not a valid safetensors file: {reason}")]
    BadFile {
        /// The file (or the name the bytes were given).
        path: String,
        /// The field or byte range at fault.
        reason: String,
    },
    /// An I/O error, with the file involved.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available, else CPU).
pub fn parse_device(s: &str) -> Result<Device, TensorError> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" => cuda(0, s),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i, s),
            _ => Err(TensorError::UnknownDevice(s.to_string())),
        },
    }
}

fn cuda(i: usize, s: &str) -> Result<Device, TensorError> {
    if tch::Cuda::is_available() && i < tch::Cuda::device_count() as usize {
        Ok(Device::Cuda(i))
    } else {
        Err(TensorError::CudaUnavailable(s.to_string()))
    }
}

/// Deterministic mode on CUDA: cuDNN off, so convolutions and BatchNorm use libtorch's
/// own kernels, whose results do not depend on an algorithm chosen at run time. tch 0.24
/// has no switch for cuDNN's deterministic-algorithms flag, hence all of cuDNN, which
/// costs a lot (a ResNet-20 epoch took 200 s instead of 4.7 s on an H200), so it is opt-in
/// (`ap --deterministic-cuda`). Off, cuDNN autotunes (`cudnn.benchmark`: the fastest
/// algorithm per convolution shape, timed on first use; our runs have fixed shapes, so
/// the timing is paid once per shape). cuBLAS is made repeatable by
/// `CUBLAS_WORKSPACE_CONFIG`, which must be set before CUDA starts: the `ap` program sets
/// it at start-up. No effect on CPU, which is deterministic for a fixed thread count.
pub fn set_deterministic(on: bool) {
    if tch::Cuda::is_available() {
        tch::Cuda::cudnn_set_benchmark(!on);
        tch::Cuda::set_user_enabled_cudnn(!on);
    }
}

/// Derives an independent seed for one purpose (init, data order, ...) from a run seed,
/// so that changing how one stream is consumed never shifts another.
pub fn derive_seed(seed: u64, purpose: &str) -> u64 {
    // FNV-1a over the purpose, mixed with the seed through splitmix64.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    splitmix64(seed ^ h)
}

/// One step of splitmix64: a fast, well-mixed 64-bit hash.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seeds libtorch's global generators (CPU and CUDA) for a purpose derived from `seed`.
pub fn seed_torch(seed: u64, purpose: &str) {
    // libtorch seeds are i64; keep the value positive and stable.
    tch::manual_seed((derive_seed(seed, purpose) >> 1) as i64);
}

/// An ordered list of named parameters sharing storage with a `VarStore`.
///
/// The order is the one the model declares, so every "global" operation (concatenating
/// scores, breaking ties by position) is deterministic.
#[derive(Debug)]
pub struct NamedParams {
    entries: Vec<(String, Tensor)>,
}

impl NamedParams {
    /// Views the named variables of `vs`, in the given order.
    pub fn from_var_store<S: AsRef<str>>(vs: &VarStore, names: &[S]) -> Result<Self, TensorError> {
        let vars = vs.variables();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref();
            let t = vars.get(name).ok_or_else(|| {
                let mut available: Vec<_> = vars.keys().cloned().collect();
                available.sort();
                TensorError::MissingParameter {
                    name: name.to_string(),
                    available: available.join(", "),
                }
            })?;
            entries.push((name.to_string(), t.shallow_clone()));
        }
        Ok(Self { entries })
    }

    /// Views every variable of `vs` (weights, biases, norm parameters and buffers), sorted by
    /// name: what a checkpoint of the whole network saves and restores.
    pub fn all_of(vs: &VarStore) -> Self {
        let mut entries: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Self { entries }
    }

    /// Builds a list from tensors the caller owns (used by tests and snapshots).
    pub fn from_entries(entries: Vec<(String, Tensor)>) -> Self {
        Self { entries }
    }

    /// Names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, tensor)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Tensors in order.
    pub fn tensors(&self) -> Vec<&Tensor> {
        self.entries.iter().map(|(_, t)| t).collect()
    }

    /// The tensor of one name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total number of elements.
    pub fn numel(&self) -> i64 {
        self.entries.iter().map(|(_, t)| t.numel() as i64).sum()
    }

    /// A detached deep copy (e.g. θ0 for rewinding, or the phase start for AP's movement).
    pub fn snapshot(&self) -> NamedParams {
        let entries = tch::no_grad(|| {
            self.entries
                .iter()
                .map(|(n, t)| (n.clone(), t.detach().copy()))
                .collect()
        });
        NamedParams { entries }
    }

    /// Copies the values of `src` into these tensors in place (same names, same order).
    pub fn copy_from(&self, src: &NamedParams) -> Result<(), TensorError> {
        tch::no_grad(|| {
            for ((name, dst), (_, s)) in self.entries.iter().zip(&src.entries) {
                dst.shallow_clone()
                    .f_copy_(s)
                    .map_err(|source| TensorError::Torch {
                        context: format!("copy into `{name}`"),
                        source,
                    })?;
            }
            Ok(())
        })
    }

    /// Writes all tensors to a safetensors file atomically.
    pub fn save(&self, path: &Path) -> Result<(), TensorError> {
        save_safetensors(path, &self.entries)
    }
}

/// Writes named tensors as safetensors (readable from Python with `safetensors.torch.load_file`),
/// through a temporary file and a rename, so an interrupted write never leaves a partial file.
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), TensorError> {
    let tmp = tmp_path(path);
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&cpu, &tmp).map_err(|source| TensorError::Torch {
        context: tmp.display().to_string(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| TensorError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads named tensors from a safetensors file onto `device`, sorted by name.
///
/// The format keeps no tensor order, so callers that need the model's order use
/// [`load_safetensors_in_order`]. The header is validated in Rust ([`parse_safetensors`])
/// before libtorch sees any of it: a damaged file is a [`TensorError::BadFile`] naming it.
pub fn load_safetensors(path: &Path, device: Device) -> Result<Vec<(String, Tensor)>, TensorError> {
    let bytes = std::fs::read(path).map_err(|source| TensorError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tensors = parse_safetensors(&bytes, &path.display().to_string())?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors
        .into_iter()
        .map(|(n, t)| (n, t.to_device(device)))
        .collect())
}

/// Reads exactly the tensors `names` from a safetensors file, in that order, onto `device`.
/// A missing or an extra name is an error naming the file, so a checkpoint of another
/// model is never half-loaded.
pub fn load_safetensors_in_order<S: AsRef<str>>(
    path: &Path,
    device: Device,
    names: &[S],
) -> Result<Vec<(String, Tensor)>, TensorError> {
    let mut by_name: std::collections::BTreeMap<String, Tensor> =
        load_safetensors(path, device)?.into_iter().collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let name = name.as_ref();
        let t = by_name
            .remove(name)
            .ok_or_else(|| TensorError::MissingParameter {
                name: format!("{name} (in {})", path.display()),
                available: by_name.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        out.push((name.to_string(), t));
    }
    if let Some(extra) = by_name.keys().next() {
        return Err(TensorError::Torch {
            context: path.display().to_string(),
            source: TchError::FileFormat(format!(
                "unexpected tensor `{extra}`: the file belongs to a different model"
            )),
        });
    }
    Ok(out)
}

/// `path` with `.tmp-<pid>` appended: the temporary file of an atomic write.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(s)
}

/// Reads a tensor of any shape into a host `Vec<f64>` (one device-to-host copy).
pub fn to_f64_vec(t: &Tensor) -> Vec<f64> {
    let flat = t
        .detach()
        .to_kind(Kind::Double)
        .to_device(Device::Cpu)
        .flatten(0, -1);
    Vec::<f64>::try_from(&flat).expect("a flat f64 CPU tensor converts to Vec<f64>")
}

/// The number of nonzero elements of each tensor (a mask's kept weights, a selection's
/// picks), read to the host in one copy; empty for no tensors (libtorch cannot stack
/// nothing). Counted by `count_nonzero` of a bool tensor, several times faster on the CPU
/// than summing it as int64 (and than `count_nonzero` of a float tensor).
pub fn nonzero_counts(tensors: &[&Tensor]) -> Vec<i64> {
    if tensors.is_empty() {
        return vec![];
    }
    let sums: Vec<Tensor> = tensors
        .iter()
        .map(|&t| match t.kind() {
            Kind::Bool => t.count_nonzero(None),
            _ => t.ne(0.0).count_nonzero(None),
        })
        .collect();
    to_f64_vec(&Tensor::stack(&sums, 0))
        .into_iter()
        .map(|c| c as i64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_purpose_and_are_stable() {
        assert_ne!(derive_seed(1, "init"), derive_seed(1, "data"));
        assert_ne!(derive_seed(1, "init"), derive_seed(2, "init"));
        assert_eq!(derive_seed(7, "init"), derive_seed(7, "init"));
    }

    #[test]
    fn device_strings() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(matches!(
            parse_device("tpu"),
            Err(TensorError::UnknownDevice(_))
        ));
        if !tch::Cuda::is_available() {
            assert!(matches!(
                parse_device("cuda"),
                Err(TensorError::CudaUnavailable(_))
            ));
        }
    }

    #[test]
    fn snapshot_is_independent_and_copy_restores() {
        let vs = VarStore::new(Device::Cpu);
        let _w = vs.root().var("w", &[3, 2], tch::nn::Init::Const(1.0));
        let p = NamedParams::from_var_store(&vs, &["w"]).unwrap();
        let snap = p.snapshot();
        let _ = tch::no_grad(|| p.get("w").unwrap().shallow_clone().fill_(5.0));
        assert_eq!(
            snap.get("w").unwrap().sum(Kind::Float).double_value(&[]),
            6.0
        );
        p.copy_from(&snap).unwrap();
        assert_eq!(p.get("w").unwrap().sum(Kind::Float).double_value(&[]), 6.0);
    }

    #[test]
    fn missing_parameter_lists_available() {
        let vs = VarStore::new(Device::Cpu);
        let _w = vs.root().var("w", &[1], tch::nn::Init::Const(1.0));
        let e = NamedParams::from_var_store(&vs, &["x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x`") && e.contains("w"), "{e}");
    }

    #[test]
    fn safetensors_round_trip() {
        let dir = std::env::temp_dir().join(format!("ap-tensor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let t = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 1.0]).view([2, 2]);
        save_safetensors(&path, &[("m".into(), t.shallow_clone())]).unwrap();
        let back = load_safetensors(&path, Device::Cpu).unwrap();
        assert_eq!(back[0].0, "m");
        assert!(back[0].1.equal(&t));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The file keeps no order; reading in a given order must give exactly that order,
    /// every time, however many tensors there are.
    #[test]
    fn in_order_load_keeps_the_callers_order() {
        let dir = std::env::temp_dir().join(format!("ap-tensor-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let names: Vec<String> = (0..20).rev().map(|i| format!("layer{i}.weight")).collect();
        let tensors: Vec<(String, Tensor)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), Tensor::from_slice(&[i as f32])))
            .collect();
        save_safetensors(&path, &tensors).unwrap();
        for _ in 0..5 {
            let back = load_safetensors_in_order(&path, Device::Cpu, &names).unwrap();
            for (i, ((n, t), want)) in back.iter().zip(&names).enumerate() {
                assert_eq!(n, want);
                assert_eq!(t.double_value(&[0]), i as f64);
            }
        }
        let err = load_safetensors_in_order(&path, Device::Cpu, &["nope"]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = load_safetensors_in_order(&path, Device::Cpu, &names[..19]).unwrap_err();
        assert!(err.to_string().contains("layer0.weight"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
