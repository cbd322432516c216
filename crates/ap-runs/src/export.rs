//! `ap export`: a finished run's network for use outside this project (docs/export.md).
//!
//! `--format masked|compact` ([`export_network`]): the network as plain dense layers that a
//! few lines of PyTorch run — the masked network (pruned weights zero), or its exact
//! compaction (`ap-compact`: dead units removed, constants folded, unread inputs dropped).
//! Batch norm is folded into the convolution before it in both.
//!
//! `--format semi-structured` ([`export_semi_structured`]): a finished N:M run's pruned
//! weights in the layout PyTorch's `torch.sparse.to_sparse_semi_structured` takes.
//!
//! That function (torch 2.11, `torch/sparse/semi_structured.py`) accepts a dense, 2-D,
//! contiguous CUDA tensor of float16 or bfloat16 (CUTLASS and cuSPARSELt backends) whose
//! rows hold at most 2 non-zeros in every 4 consecutive values, with both dimensions
//! multiples of the backend's minimum (CUTLASS: 32 rows × 64 columns; cuSPARSELt:
//! 16 × 16). So each layer the run's pattern fits is written as `weight ⊙ mask` viewed as
//! `[out, in·kh·kw]` (the rows the pattern groups), cast, and padded with zero rows and
//! columns up to multiples of 32 × 64, which both backends accept; zero padding keeps the
//! pattern. The network's other tensors (biases, layers the pattern does not fit,
//! BatchNorm) are written unchanged under their names, so the file runs the network. A
//! JSON file next to it records each layer's original and padded shapes, so a caller pads
//! the input, slices the product back (`y[:, :out]`) and reshapes a convolution's weight.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ap_mask::NmPattern;
use ap_tensor::save_safetensors;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use ap_compact::{Compaction, InferenceNet};

use crate::runner::{FinishedNetwork, RunOptions};
use crate::store::{write_atomic, RunDir};

/// Element type of the exported weights: the two `to_sparse_semi_structured` takes for 2:4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportDtype {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl ExportDtype {
    fn kind(self) -> Kind {
        match self {
            ExportDtype::F16 => Kind::Half,
            ExportDtype::Bf16 => Kind::BFloat16,
        }
    }

    /// Parses `--dtype`; the error names the value and the valid ones.
    pub fn parse(text: &str) -> Result<ExportDtype> {
        match text {
            "f16" | "float16" => Ok(ExportDtype::F16),
            "bf16" | "bfloat16" => Ok(ExportDtype::Bf16),
            other => {
                bail!("--dtype {other}: use f16 or bf16, the element types of 2:4 sparse matmuls")
            }
        }
    }
}

/// `ap export`'s dense formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkFormat {
    /// The masked network: every unit kept, pruned weights zero.
    Masked,
    /// The compacted network: the same outputs from fewer units.
    Compact,
}

/// How an image becomes the network's input: `pad` black pixels added on each side of the
/// raw image, then `((pixels / 255) − mean) / std` per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// The network's per-sample input `[C, H, W]` (after padding).
    pub shape: Vec<i64>,
    /// Per-channel means of pixels scaled to `[0, 1]`.
    pub mean: Vec<f64>,
    /// Per-channel standard deviations.
    pub std: Vec<f64>,
    /// Black pixels added on each side before normalising.
    pub pad: i64,
}

/// The description written next to a `masked` or `compact` export (`FILE.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkExport {
    /// Which network.
    pub format: NetworkFormat,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The run's key.
    pub key: String,
    /// The model's name.
    pub model: String,
    /// The data set's name.
    pub dataset: String,
    /// The input the network takes.
    pub input: InputSpec,
    /// Number of classes (logits per sample).
    pub classes: i64,
    /// The forward pass: ops over the file's tensors (docs/export.md runs them).
    pub ops: Vec<ap_models::Op>,
    /// Parameters and multiply-adds per sample of the written network.
    pub cost: ap_compact::Cost,
    /// The masked network's cost, for comparison.
    pub masked_cost: ap_compact::Cost,
    /// Each weight layer's units before and after compaction (equal for `masked`).
    pub layers: Vec<ap_compact::LayerChange>,
    /// The run's recorded test accuracy (the exported network reproduces it, unless
    /// `inactive` says units were dropped).
    pub test_accuracy: f64,
    /// Set when `--drop-inactive` also removed the units no training image activates:
    /// the network is then exact on the training set only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive: Option<InactiveDropped>,
}

/// What `--drop-inactive` removed and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InactiveDropped {
    /// Hidden units inactive on every training image (removed).
    pub units: i64,
    /// Test accuracy of the written network (compare with `test_accuracy`).
    pub test_accuracy: f64,
}

/// Writes the finished run in `run_dir` as a `format` network: tensors to `out`
/// (safetensors), the description to `out` with `.json`. Errors name the directory and the
/// fix (not a run, not finished) or the model (one that does not describe its graph).
///
/// With `drop_inactive` (compact only), units that no training image activates are removed
/// too ([`InferenceNet::compact_without_inactive`]): exact on the training set, not
/// elsewhere, so the description records the test accuracy of the written network.
pub fn export_network(
    run_dir: &Path,
    out: &Path,
    format: NetworkFormat,
    data_dir: &Path,
    drop_inactive: bool,
) -> Result<NetworkExport> {
    if drop_inactive && format != NetworkFormat::Compact {
        bail!(
            "--drop-inactive removes units from the compact network: use it with --format compact"
        );
    }
    let opts = RunOptions::quiet(data_dir.to_path_buf(), Device::Cpu);
    let run = FinishedNetwork::load(run_dir, "export", &opts)?;
    let input = run.data.test.images.size()[1..].to_vec();
    let masked = InferenceNet::from_model(&run.model, &run.named_masks(), &input)
        .with_context(|| format!("{}: model {}", run_dir.display(), run.spec.model))?;
    let masked_cost = masked.cost();
    let (net, changes, inactive) = match format {
        NetworkFormat::Masked => {
            let unchanged = Compaction::between(&masked, &masked);
            (masked, unchanged, None)
        }
        NetworkFormat::Compact if drop_inactive => {
            let (net, changes, units) = masked
                .compact_without_inactive(&run.data.train.images, run.spec.eval_batch_size)
                .with_context(|| format!("{}: model {}", run_dir.display(), run.spec.model))?;
            let correct = net
                .forward(&run.data.test.images)
                .argmax(1, false)
                .eq_tensor(&run.data.test.labels)
                .sum(Kind::Int64)
                .int64_value(&[]);
            let test_accuracy = correct as f64 / run.data.test.labels.size()[0] as f64;
            let dropped = InactiveDropped {
                units,
                test_accuracy,
            };
            (net, changes, Some(dropped))
        }
        NetworkFormat::Compact => {
            let (net, changes) = masked.compact();
            (net, changes, None)
        }
    };
    let layers = changes.layers;
    let (ops, tensors) = net.ops();
    save_safetensors(out, &tensors).with_context(|| format!("writing {}", out.display()))?;
    let kind = ap_data::DatasetKind::from_name(&run.spec.dataset)?;
    let export = NetworkExport {
        format,
        run_dir: run_dir.to_path_buf(),
        key: run.spec.key(),
        model: run.spec.model.to_string(),
        dataset: run.spec.dataset.clone(),
        input: InputSpec {
            shape: input,
            mean: kind.channel_mean().to_vec(),
            std: kind.channel_std().to_vec(),
            pad: run.spec.pad_pixels()? as i64,
        },
        classes: run.data.num_classes() as i64,
        ops,
        cost: net.cost(),
        masked_cost,
        layers,
        test_accuracy: run.records.last().map_or(f64::NAN, |r| r.test.accuracy),
        inactive,
    };
    let json = serde_json::to_string_pretty(&export)?;
    write_atomic(&json_path(out), json.as_bytes())?;
    Ok(export)
}

/// Rows and columns of an exported weight are padded to multiples of these: CUTLASS's
/// minimum for float16/bfloat16 (cuSPARSELt's 16 × 16 divides them).
pub const PAD_TO: [i64; 2] = [32, 64];

/// One exported layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedLayer {
    /// The parameter's name, which is also its tensor's name in the safetensors file.
    pub name: String,
    /// The weight's own shape (`[out, in]` or `[out, in, kh, kw]`).
    pub shape: Vec<i64>,
    /// The 2-D shape the pattern groups: `[out, in·kh·kw]`.
    pub rows_cols: [i64; 2],
    /// The padded 2-D shape written.
    pub padded: [i64; 2],
    /// Non-zero weights.
    pub kept: i64,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemiStructuredExport {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The run's key.
    pub key: String,
    /// The run's N:M pattern.
    pub pattern: String,
    /// Element type written.
    pub dtype: ExportDtype,
    /// Layers written, by name.
    pub layers: Vec<ExportedLayer>,
    /// Prunable layers the pattern does not fit (rows not a multiple of M): left dense by
    /// the run, written unchanged.
    pub dense_layers: Vec<String>,
    /// Every other tensor written unchanged (biases, BatchNorm), by name.
    pub others: Vec<String>,
}

/// Whether masks of `p` have at most 2 non-zeros in every 4 consecutive weights (groups and
/// blocks of 4 both start at row starts): M divides 4 and N·4/M ≤ 2 (2:4, 1:4, 1:2), or M is
/// a multiple of 4 and N ≤ 2 (2:8, 1:8).
pub fn within_two_of_four(p: &NmPattern) -> bool {
    if 4 % p.m == 0 {
        p.n * (4 / p.m) <= 2
    } else {
        p.m % 4 == 0 && p.n <= 2
    }
}

/// Writes the finished run in `run_dir` to `out` (safetensors) and `out` with `.json`.
/// Errors name the directory or the layer and say what to do: not a run, not finished, no
/// pattern, a pattern that is not 2:4-compatible, or a layer that breaks it.
pub fn export_semi_structured(
    run_dir: &Path,
    out: &Path,
    dtype: ExportDtype,
) -> Result<SemiStructuredExport> {
    let (dir, spec) = RunDir::finished(run_dir, "export")?;
    let Some(pattern) = spec.pattern else {
        bail!(
            "{}: the run has no N:M pattern (its spec sets no `pattern`), so its masks are \
             unstructured; a semi-structured export needs a run with pattern = \"2:4\"",
            run_dir.display()
        );
    };
    if !within_two_of_four(&pattern) {
        bail!(
            "{}: pattern {pattern} can keep more than 2 of 4 consecutive weights; sparse \
             tensor cores take 2:4 (or 1:4, 1:2), so run with pattern = \"2:4\"",
            run_dir.display()
        );
    }
    let checkpoint = dir.final_checkpoint()?;
    let masks = ap_tensor::load_safetensors(&run_dir.join("mask.safetensors"), Device::Cpu)
        .with_context(|| format!("reading the mask of {}", run_dir.display()))?;
    let mask_of = |name: &str| masks.iter().find(|(n, _)| n == name).map(|(_, m)| m);
    let (mut layers, mut dense_layers, mut others, mut tensors) = (vec![], vec![], vec![], vec![]);
    for (key, t) in &checkpoint.tensors {
        let Some(name) = key.strip_prefix("model/") else {
            continue;
        };
        let Some(mask) = mask_of(name).filter(|m| pattern.fits(&m.size())) else {
            match mask_of(name) {
                Some(_) => dense_layers.push(name.to_string()),
                None => others.push(name.to_string()),
            }
            tensors.push((name.to_string(), t.shallow_clone()));
            continue;
        };
        let shape = mask.size();
        let rows = shape[0];
        let cols: i64 = shape[1..].iter().product();
        let flat = (t * mask).reshape([rows, cols]);
        let per_four = flat
            .ne(0.0)
            .reshape([-1, 4])
            .sum_dim_intlist(1, false, Kind::Int64);
        let worst = per_four.max().int64_value(&[]);
        if worst > 2 {
            bail!(
                "{}: layer {name} has {worst} non-zero weights in some group of 4, so it is not \
                 2:4 sparse; the run's mask.safetensors does not match its pattern {pattern}",
                run_dir.display()
            );
        }
        let padded = [round_up(rows, PAD_TO[0]), round_up(cols, PAD_TO[1])];
        let written = flat
            .constant_pad_nd([0, padded[1] - cols, 0, padded[0] - rows])
            .to_kind(dtype.kind())
            .contiguous();
        layers.push(ExportedLayer {
            name: name.to_string(),
            shape: shape.clone(),
            rows_cols: [rows, cols],
            padded,
            kept: flat.ne(0.0).sum(Kind::Int64).int64_value(&[]),
        });
        tensors.push((name.to_string(), written));
    }
    if layers.is_empty() {
        bail!(
            "{}: pattern {pattern} fits no prunable layer of {}, so there is nothing to export",
            run_dir.display(),
            spec.model
        );
    }
    save_safetensors(out, &tensors).with_context(|| format!("writing {}", out.display()))?;
    let export = SemiStructuredExport {
        run_dir: run_dir.to_path_buf(),
        key: spec.key(),
        pattern: pattern.to_string(),
        dtype,
        layers,
        dense_layers,
        others,
    };
    let json = serde_json::to_string_pretty(&export)?;
    write_atomic(&json_path(out), json.as_bytes())?;
    Ok(export)
}

/// The description written next to an export: `<out>.json`.
pub fn json_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

fn round_up(v: i64, multiple: i64) -> i64 {
    (v + multiple - 1) / multiple * multiple
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_of_four_compatible_patterns() {
        let ok = |t: &str| within_two_of_four(&t.parse().unwrap());
        assert!(ok("2:4") && ok("1:4") && ok("1:2") && ok("2:8") && ok("1:8"));
        assert!(!ok("3:4") && !ok("4:8") && !ok("3:8") && !ok("1:3") && !ok("2:6"));
    }

    #[test]
    fn padding_rounds_up_to_the_backends_multiples() {
        assert_eq!(round_up(300, 32), 320);
        assert_eq!(round_up(784, 64), 832);
        assert_eq!(round_up(64, 64), 64);
        assert_eq!(
            json_path(Path::new("a/b.safetensors")),
            Path::new("a/b.safetensors.json")
        );
    }
}
