//! Experiment specs: one run ([`RunSpec`]) and a grid of runs ([`GridSpec`]), read from
//! TOML with unknown fields rejected and ranges checked, so a typo is an error naming
//! the file and the field, not a silently ignored setting.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ap_criteria::ApConfig;
use ap_prune::{Method, PruneError};
use ap_tensor::FieldError;
use ap_train::TrainConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// AP on or off, with its settings: the `[ap]` table is `enabled` plus the fields of
/// [`ApConfig`], whose definitions and defaults it shares (so `[ap] enabled = true` alone
/// is AP as released). Serialises flat, as `{"enabled": …, "rate": …, …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApSpec {
    /// Whether AP takes a share of each pruning event.
    pub enabled: bool,
    /// AP's settings (used when enabled; part of the run key either way).
    #[serde(flatten)]
    pub config: ApConfig,
}

/// Everything that determines a run's results. Its canonical JSON hashes to the run key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The model; written as its registered name (`model = "resnet20"`, see
    /// `ap_models::ModelKind`), so an unknown name is a parse error listing the valid ones.
    pub model: ap_models::ModelKind,
    /// Dataset name (`mnist`, `fashion-mnist`).
    pub dataset: String,
    /// Pixels added on each side of every image, train and test, at load time (black
    /// pixels; see `ap_data::Dataset::padded`): 2 makes Fashion-MNIST 32×32, as VGG needs.
    /// Left out of the spec's key while 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pad: i64,
    /// Run seed; init and data order derive their own seeds from it.
    pub seed: u64,
    /// Training recipe of each phase.
    pub train: TrainConfig,
    /// Pruning method.
    pub prune: Method,
    /// N:M sparsity the method keeps to (`pattern = "2:4"`, see `ap_mask::NmPattern`): every
    /// event keeps each group of M consecutive input weights at N or more, and the method's
    /// last event prunes to exactly N. Left out of the spec's key when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<ap_mask::NmPattern>,
    /// AP settings.
    #[serde(default)]
    pub ap: ApSpec,
    /// Weight initialisation scheme (default: PyTorch's layer defaults; a recipe preset
    /// sets its paper's). Always part of the key.
    #[serde(default)]
    pub init: ap_models::InitScheme,
    /// Batch size for evaluation (does not change results, only memory).
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: i64,
}

fn default_eval_batch() -> i64 {
    1000
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The largest `pad`: enough for any of the models' input sizes, small enough that a typo
/// (`pad = 200`) is an error rather than a 400×400 data set.
const MAX_PAD: i64 = 64;

impl RunSpec {
    /// Reads a spec file, resolving a `train.recipe` preset; errors name the file.
    pub fn read(path: &Path) -> Result<RunSpec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        RunSpec::parse(&text, &path.display().to_string())
    }

    /// Parses spec text, resolving a `train.recipe` preset; errors name `source`.
    pub fn parse(text: &str, source: &str) -> Result<RunSpec> {
        let mut v: toml::Value = parse_toml(text, source)?;
        let original = v.clone();
        crate::recipes::resolve(&mut v).with_context(|| source.to_string())?;
        // Compared as text too: a NaN value is not equal to itself.
        if v == original || toml::to_string(&v).ok() == toml::to_string(&original).ok() {
            return parse_toml(text, source); // error positions point into the file
        }
        let resolved = toml::to_string(&v).expect("a TOML value serialises");
        parse_toml(&resolved, &format!("{source} (with its recipe)"))
    }

    /// Checks names and ranges; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        let dataset = ap_data::DatasetKind::from_name(&self.dataset)
            .map_err(|e| FieldError::new("dataset", format!("= {:?}: {e}", self.dataset)))?;
        let input = self.input_shape(dataset)?;
        self.model.check_input(&input).map_err(|e| match self.pad {
            0 => FieldError::new("dataset", format!("= {:?}: {e}", self.dataset)),
            pad => FieldError::new("pad", format!("= {pad} on {:?}: {e}", self.dataset)),
        })?;
        self.train
            .validate()
            .map_err(|e| match e.field.starts_with("train.") {
                true => e,
                false => FieldError::new(format!("train.{}", e.field), e.problem),
            })?;
        self.check_batch_size(dataset.train_examples())?;
        if self.eval_batch_size < 1 {
            let problem = format!("= {} must be at least 1", self.eval_batch_size);
            return Err(FieldError::new("eval_batch_size", problem));
        }
        let ap_rate = self.ap.config.rate;
        if !(0.0..1.0).contains(&ap_rate) {
            return Err(FieldError::out_of("ap.rate", ap_rate, "[0, 1)"));
        }
        let prune_error = |e: PruneError| match e {
            PruneError::Setting(f) => f,
            other => FieldError::new("prune", format!(": {other}")),
        };
        let ap = self.ap_config();
        self.prune
            .validate(&self.train, ap.as_ref())
            .map_err(prune_error)?;
        // The network's prunable layers for this data set: built once per model and input
        // in a process, drawing from libtorch's generator then (a run seeds the generator
        // itself before it builds its model).
        let shapes = ap_models::prunable_shapes(self.model, &input, dataset.num_classes() as i64);
        let prunable: Vec<String> = shapes.iter().map(|(n, _)| n.clone()).collect();
        if let Method::Rigl(ap_prune::RiglConfig { dense_layers, .. }) = &self.prune {
            if let Some(bad) = dense_layers.iter().find(|d| !prunable.contains(d)) {
                let problem = format!(
                    ": {bad:?} is not a prunable layer of {}; valid: {}",
                    self.model,
                    prunable.join(", ")
                );
                return Err(FieldError::new("prune.dense_layers", problem));
            }
        }
        if let Some(p) = &self.pattern {
            self.prune.check_pattern(p).map_err(prune_error)?;
            if !shapes.iter().any(|(_, shape)| p.fits(shape)) {
                let problem = format!(
                    "= \"{p}\": no prunable layer of {} has rows (inputs × kernel) that are a \
                     multiple of {}, so nothing could be pruned",
                    self.model, p.m
                );
                return Err(FieldError::new("pattern", problem));
            }
        }
        if let Some(alloc) = self.prune.allocation() {
            alloc
                .validate(&prunable)
                .map_err(|e| FieldError::new("prune.allocation", format!(": {e}")))?;
        }
        // What the run would leave of each layer: no event may empty one.
        self.prune.check_layers(&shapes).map_err(prune_error)
    }

    /// `pad` as a pixel count, or an error naming `pad` when it is outside `0..=64`.
    pub fn pad_pixels(&self) -> Result<usize, FieldError> {
        match usize::try_from(self.pad) {
            Ok(p) if self.pad <= MAX_PAD => Ok(p),
            _ => Err(FieldError::out_of(
                "pad",
                self.pad,
                &format!("[0, {MAX_PAD}]"),
            )),
        }
    }

    /// The shape `[C, H, W]` of one image of `dataset` as the model sees it: after `pad`.
    pub fn input_shape(&self, dataset: ap_data::DatasetKind) -> Result<[i64; 3], FieldError> {
        Ok(dataset.padded_image_shape(self.pad_pixels()?))
    }

    /// Errors when `train.batch_size` exceeds the `n_train` examples of the training set
    /// (the official size at validation, the loaded one before training): such a batch
    /// would silently be the whole set, and an epoch one step.
    pub fn check_batch_size(&self, n_train: usize) -> Result<(), FieldError> {
        if self.train.batch_size > n_train {
            let problem = format!(
                "= {} is larger than the training set of {} ({n_train} examples)",
                self.train.batch_size, self.dataset
            );
            return Err(FieldError::new("train.batch_size", problem));
        }
        Ok(())
    }

    /// AP's configuration when enabled.
    pub fn ap_config(&self) -> Option<ApConfig> {
        self.ap.enabled.then(|| self.ap.config.clone())
    }

    /// The per-event rate p of round-based methods (none for schedule-driven ones).
    pub fn prune_rate(&self) -> Option<f64> {
        match &self.prune {
            Method::Imp(c) => Some(c.rate),
            Method::Lrr(c) => Some(c.rate),
            _ => None,
        }
    }

    /// Canonical JSON: fields in declaration order, every default written out.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a spec serialises")
    }

    /// First 16 hex digits of the SHA-256 of the canonical JSON.
    pub fn key(&self) -> String {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The method's name with its N:M pattern, e.g. `imp`, `imp-2:4`: what tables and
    /// summaries call it.
    pub fn method_name(&self) -> String {
        match &self.pattern {
            Some(p) => format!("{}-{p}", self.prune.name()),
            None => self.prune.name(),
        }
    }

    /// A readable, unique directory name: `imp+ap-lenet300-100-mnist-s0-<key>` (a pattern
    /// as `imp-2of4`, without the colon some file systems refuse).
    pub fn dir_name(&self) -> String {
        format!(
            "{}{}-{}-{}-s{}-{}",
            self.method_name().replace(':', "of"),
            if self.ap.enabled { "+ap" } else { "" },
            self.model,
            self.dataset,
            self.seed,
            self.key()
        )
    }

    /// Label of the method with its pattern and AP state, e.g. `imp`, `imp-2:4+ap`.
    pub fn method_label(&self) -> String {
        format!(
            "{}{}",
            self.method_name(),
            if self.ap.enabled { "+ap" } else { "" }
        )
    }
}

/// A grid: a base spec and axes (dotted field paths → lists of values) to expand.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSpec {
    /// Name of the grid (the results folder).
    pub name: String,
    /// What the grid shows.
    #[serde(default)]
    pub description: String,
    /// The spec every run starts from.
    pub base: toml::Value,
    /// Field path → values; the grid is their Cartesian product.
    #[serde(default)]
    pub axes: BTreeMap<String, Vec<toml::Value>>,
    /// Sub-grids (`[[part]]`) for settings that go together, such as a model with its
    /// dataset and recipe; each is expanded on its own and the runs are concatenated.
    #[serde(default)]
    pub part: Vec<GridPart>,
}

/// One sub-grid: settings merged over the grid's `base`, axes added to (or replacing)
/// the grid's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridPart {
    /// A label for error messages.
    #[serde(default)]
    pub name: String,
    /// Fields merged into the grid's base (tables merge, other values replace).
    #[serde(default = "empty_table")]
    pub base: toml::Value,
    /// Axes of this part; an axis of the same path replaces the grid's.
    #[serde(default)]
    pub axes: BTreeMap<String, Vec<toml::Value>>,
}

fn empty_table() -> toml::Value {
    toml::Value::Table(Default::default())
}

/// Merges `over` into `base`: tables recursively, anything else replaces.
pub(crate) fn merge(base: &mut toml::Value, over: &toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) => merge(bv, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Reads a TOML file into `T`; errors name the file, line and column.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_toml(&text, &path.display().to_string())
}

/// Parses TOML text into `T`; errors name `source`, line and column, on one line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, source: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| {
            let line = text[..s.start].matches('\n').count() + 1;
            let col = s.start - text[..s.start].rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(":{line}:{col}")
        });
        // toml leaves the message empty for a missing value, and may span lines.
        let msg = match e.message().trim() {
            "" => "a value is missing or invalid here".to_owned(),
            m => m.replace('\n', "; "),
        };
        anyhow::anyhow!("{source}{}: {msg}", at.unwrap_or_default())
    })
}

impl GridSpec {
    /// Expands the axes over the base (per part, when there are parts) into validated run
    /// specs, in a stable order. Two parts that produce the same run are an error.
    pub fn expand(&self, source: &str) -> Result<Vec<RunSpec>> {
        if self.part.is_empty() {
            return expand_one(&self.base, &self.axes, source);
        }
        let mut out: Vec<RunSpec> = vec![];
        for (i, part) in self.part.iter().enumerate() {
            let mut base = self.base.clone();
            merge(&mut base, &part.base);
            let mut axes = self.axes.clone();
            axes.extend(part.axes.clone());
            let label = if part.name.is_empty() {
                format!("{source} part {}", i + 1)
            } else {
                format!("{source} part {:?}", part.name)
            };
            for s in expand_one(&base, &axes, &label)? {
                if out.iter().any(|o| o.key() == s.key()) {
                    bail!(
                        "{label}: run {} is already in an earlier part",
                        s.dir_name()
                    );
                }
                out.push(s);
            }
        }
        Ok(out)
    }
}

/// The Cartesian product of `axes` over `base`, as validated specs.
fn expand_one(
    base: &toml::Value,
    axes: &BTreeMap<String, Vec<toml::Value>>,
    source: &str,
) -> Result<Vec<RunSpec>> {
    {
        let mut points: Vec<toml::Value> = vec![base.clone()];
        for (path, values) in axes {
            if values.is_empty() {
                bail!("{source}: axes.{path:?} has no values");
            }
            let mut next = Vec::with_capacity(points.len() * values.len());
            for p in &points {
                for v in values {
                    let mut q = p.clone();
                    set_path(&mut q, path, v.clone())
                        .with_context(|| format!("{source}: axes.{path:?}"))?;
                    next.push(q);
                }
            }
            points = next;
        }
        points
            .into_iter()
            .map(|mut v| {
                crate::recipes::resolve(&mut v).with_context(|| source.to_string())?;
                let text = toml::to_string(&v).expect("a TOML value serialises");
                let spec: RunSpec = parse_toml(&text, &format!("{source} (expanded)"))?;
                spec.validate()
                    .with_context(|| format!("{source}: run {}", spec.dir_name()))?;
                Ok(spec)
            })
            .collect()
    }
}

fn set_path(root: &mut toml::Value, path: &str, value: toml::Value) -> Result<()> {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = cur
            .as_table_mut()
            .with_context(|| format!("`{}` is not a table", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        cur = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    unreachable!("split yields at least one part")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ap_testkit::fixtures::{self, TomlExt};

    /// The spec of these tests: LeNet-300-100 / MNIST, seed 0, 100 steps of Adam 1.2e-3 in
    /// batches of 60, IMP for 2 rounds at rate 0.2, AP on at its default rate.
    fn spec() -> toml::Value {
        let mut spec = fixtures::lenet_mnist_spec()
            .with("seed", 0)
            .with("train.iterations", 100);
        spec["ap"].as_table_mut().unwrap().remove("rate");
        spec
    }

    /// [`spec`] with `path` set to `value`, parsed.
    fn parse_with(path: &str, value: impl Into<toml::Value>) -> Result<RunSpec> {
        parse_toml(&spec().with(path, value).to_toml(), "x")
    }

    /// `pattern = "2:4"`: part of the key and the names when set, absent from the key when
    /// not; checked against the method (rounds must end on N/M) and the model's layers.
    #[test]
    fn an_nm_pattern_names_and_validates() {
        let _g = ap_testkit::torch_lock();
        let plain: RunSpec = parse_toml(&spec().to_toml(), "x").unwrap();
        assert!(!plain.canonical_json().contains("pattern"));
        // 0.8^3 = 0.512 > 0.5 (the rounds end above 2:4), 0.8^4 = 0.41 ≤ 0.5.
        let short = parse_with("pattern", "2:4").unwrap();
        let e = short.validate().unwrap_err().to_string();
        assert!(e.contains("prune.rounds") && e.contains("2:4"), "{e}");
        let ok: RunSpec = parse_toml(
            &spec()
                .with("pattern", "2:4")
                .with("prune.rounds", 4)
                .to_toml(),
            "x",
        )
        .unwrap();
        ok.validate().unwrap();
        assert_ne!(ok.key(), plain.key());
        assert!(ok.canonical_json().contains("\"pattern\":\"2:4\""));
        assert_eq!(ok.method_label(), "imp-2:4+ap");
        assert!(ok
            .dir_name()
            .starts_with("imp-2of4+ap-lenet300-100-mnist-s0-"));
        let e = parse_with("pattern", "2-4").unwrap_err();
        assert!(format!("{e:#}").contains("N:M"), "{e:#}");
        let granet = spec()
            .with("pattern", "2:4")
            .with("prune", toml::Value::Table(Default::default()))
            .with("prune.method", "granet")
            .with("prune.final_density", 0.5)
            .with("prune.begin", 0)
            .with("prune.end", 50)
            .with("prune.every", 10);
        let e = parse_toml::<RunSpec>(&granet.to_toml(), "x")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "pattern", "{e}");
        // 1:9 fits no layer of LeNet-300-100 on MNIST (rows of 784, 300 and 100); two
        // rounds at 0.7 reach its density 0.11 in the last (0.3, then 0.09).
        let none_fit: RunSpec = parse_toml(
            &spec()
                .with("pattern", "1:9")
                .with("prune.rounds", 2)
                .with("prune.rate", 0.7)
                .to_toml(),
            "x",
        )
        .unwrap();
        let e = none_fit.validate().unwrap_err();
        assert!(e.problem.contains("no prunable layer"), "{e}");
    }

    #[test]
    fn spec_round_trips_and_defaults_are_filled() {
        let _g = ap_testkit::torch_lock();
        let s: RunSpec = parse_toml(&spec().to_toml(), "spec.toml").unwrap();
        s.validate().unwrap();
        assert_eq!(s.ap.config.rate, 0.02);
        assert_eq!(s.eval_batch_size, 1000);
        let back: RunSpec = parse_toml(&toml::to_string(&s).unwrap(), "x").unwrap();
        assert_eq!(back, s);
        assert_eq!(back.key(), s.key());
        assert!(s.dir_name().starts_with("imp+ap-lenet300-100-mnist-s0-"));
    }

    #[test]
    fn unknown_field_is_a_one_line_error_naming_file_and_field() {
        let bad = spec().with("sed", 1).to_toml();
        let line = 1 + bad.lines().position(|l| l == "sed = 1").unwrap();
        let e = parse_toml::<RunSpec>(&bad, "spec.toml")
            .unwrap_err()
            .to_string();
        let at = format!("spec.toml:{line}:1");
        assert!(
            e.starts_with(&at) && e.contains("sed") && !e.contains('\n'),
            "{e}"
        );
    }

    /// LeNet-300-100 has 266,200 prunable weights in 3 layers; rate 0.9 leaves
    /// 26,620 → 2,662 → 267 → 27 → 3 → 1: the sixth round leaves fewer weights than
    /// layers. Layer-wise, the uniform rate's floor always leaves a layer a weight, but
    /// the output layer (1,000 weights) at twice a rate of 0.6 loses them all in round 1.
    #[test]
    fn rounds_that_would_empty_a_layer_are_rejected_naming_the_round() {
        let _g = ap_testkit::torch_lock();
        let validated = |rounds: i64, rate: f64, alloc: &str| {
            let alloc: toml::Table = toml::from_str(&format!("v = {alloc}")).unwrap();
            let text = spec()
                .with("prune.rounds", rounds)
                .with("prune.allocation", alloc["v"].clone())
                .with("prune.rate", rate)
                .to_toml();
            parse_toml::<RunSpec>(&text, "x").unwrap().validate()
        };
        validated(5, 0.9, "\"global\"").unwrap();
        let e = validated(6, 0.9, "\"global\"").unwrap_err().to_string();
        assert!(
            e.contains("after round 6") && e.contains("only 1 weights"),
            "{e}"
        );
        validated(8, 0.9, "\"uniform\"").unwrap();
        let doubled = "{ per_layer = { overrides = { \"fc3.weight\" = 2.0 } } }";
        validated(1, 0.4, doubled).unwrap();
        let e = validated(1, 0.6, doubled).unwrap_err().to_string();
        assert!(
            e.contains("after round 1") && e.contains("`fc3.weight`"),
            "{e}"
        );
    }

    /// `pad` is out of the key (and the written spec) at 0 and in it otherwise; VGG-16 on
    /// Fashion-MNIST (28×28) validates only with `pad = 2` (32×32); a `pad` outside
    /// [0, 64] is an error naming it.
    #[test]
    fn pad_fits_fashion_mnist_to_vgg_and_is_keyed_only_when_set() {
        let _g = ap_testkit::torch_lock();
        let base: RunSpec = parse_toml(&spec().to_toml(), "x").unwrap();
        let zero = parse_with("pad", 0).unwrap();
        assert_eq!((zero.pad, zero.key()), (0, base.key()));
        assert!(!zero.canonical_json().contains("pad"));
        assert!(!toml::to_string(&zero).unwrap().contains("pad"));
        let two = parse_with("pad", 2).unwrap();
        assert_ne!(two.key(), base.key());
        assert!(two.canonical_json().contains(r#""pad":2"#));
        let back: RunSpec = parse_toml(&toml::to_string(&two).unwrap(), "x").unwrap();
        assert_eq!(back.key(), two.key());
        let vgg = |pad: i64| {
            let text = spec()
                .with("model", "vgg16")
                .with("dataset", "fashion-mnist")
                .with("pad", pad)
                .to_toml();
            parse_toml::<RunSpec>(&text, "x").unwrap().validate()
        };
        vgg(2).unwrap();
        let e = vgg(0).unwrap_err().to_string();
        assert!(
            e.starts_with("dataset = \"fashion-mnist\"") && e.contains("divisible by 32"),
            "{e}"
        );
        let e = vgg(1).unwrap_err().to_string();
        assert!(
            e.starts_with("pad = 1") && e.contains("divisible by 32"),
            "{e}"
        );
        for bad in [-1, 65] {
            let e = vgg(bad).unwrap_err().to_string();
            assert_eq!(e, format!("pad = {bad} must be in [0, 64]"));
        }
    }

    /// `train.channels_last` off (absent or false) leaves the key as it was, so every
    /// existing run keeps its key and records; on, it is a different run.
    #[test]
    fn channels_last_is_keyed_only_when_set() {
        let base: RunSpec = parse_toml(&spec().to_toml(), "x").unwrap();
        assert!(!base.train.channels_last);
        let off = parse_with("train.channels_last", false).unwrap();
        assert_eq!(off.key(), base.key());
        assert!(!off.canonical_json().contains("channels_last"));
        let on = parse_with("train.channels_last", true).unwrap();
        assert_ne!(on.key(), base.key());
        assert!(on.canonical_json().contains(r#""channels_last":true"#));
        let back: RunSpec = parse_toml(&toml::to_string(&on).unwrap(), "x").unwrap();
        assert_eq!(back.key(), on.key());
    }

    /// `[ap]` shares ApConfig's fields: an unknown one is still an error naming it.
    #[test]
    fn ap_table_rejects_unknown_fields() {
        let e = parse_with("ap.ratte", 0.1).unwrap_err().to_string();
        assert!(e.contains("ratte"), "{e}");
    }

    #[test]
    fn out_of_range_rates_name_the_field() {
        let _g = ap_testkit::torch_lock();
        let s = parse_with("prune.rate", 1.5).unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("prune.rate"));
        let s = parse_with("ap.rate", 0.3).unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("ap.rate"));
        let e = parse_with("prune.method", "lottery")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("imp"),
            "unknown method lists the valid ones: {e}"
        );
    }

    #[test]
    fn grid_expands_the_product_of_axes() {
        let _g = ap_testkit::torch_lock();
        let axes = [
            ("seed", vec![0, 1].into()),
            ("ap.enabled", vec![false, true].into()),
        ];
        let grid = fixtures::grid_of("g", &axes, spec()).to_toml();
        let g: GridSpec = parse_toml(&grid, "grid.toml").unwrap();
        let runs = g.expand("grid.toml").unwrap();
        assert_eq!(runs.len(), 4);
        let mut keys: Vec<String> = runs.iter().map(RunSpec::key).collect();
        keys.dedup();
        assert_eq!(keys.len(), 4);
        assert!(runs.iter().any(|r| r.seed == 1 && !r.ap.enabled));
    }

    /// Run keys are part of the store's format: a finished run is found again only if its
    /// key is unchanged, so a change here orphans every user's finished runs — made only
    /// on purpose. These were derived independently of this code, by hashing the
    /// canonical JSON written out by hand (`python3 tests/reference/run_key.py`). They
    /// changed deliberately once (2026-12, issue "Trustworthy numbers"): `init` is always
    /// in the key now that the default is PyTorch's initialisation rather than tch's, AP
    /// gained `survivor_share` and `in_drop_and_grow`, and the default grid prunes
    /// layer-wise with 3 seeds — results of the old code must not be reused.
    #[test]
    fn golden_run_keys_do_not_change() {
        let _g = ap_testkit::torch_lock();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let path = root.join("grids/default.toml");
        let grid: GridSpec = read_toml(&path).unwrap();
        let names: Vec<String> = grid
            .expand("default.toml")
            .unwrap()
            .iter()
            .map(|s| s.dir_name())
            .collect();
        assert_eq!(
            names,
            [
                "imp-lenet300-100-mnist-s0-77c3cf9a7450db4d",
                "imp-lenet300-100-mnist-s1-cb2858578bbf49da",
                "imp-lenet300-100-mnist-s2-bebc3a9c42fa86d8",
                "imp+ap-lenet300-100-mnist-s0-9bb8fba9835f74a4",
                "imp+ap-lenet300-100-mnist-s1-e3a66feab4c225ba",
                "imp+ap-lenet300-100-mnist-s2-d877a9eff101aa13",
            ]
        );
        // A grid written with parts expands to the same runs as the flat grid.
        let parted: GridSpec = parse_toml(
            &std::fs::read_to_string(&path).unwrap().replace(
                "[axes]\n\"ap.enabled\" = [false, true]\nseed = [0, 1, 2]",
                "[axes]\nseed = [0, 1, 2]\n[[part]]\naxes = { \"ap.enabled\" = [false, true] }",
            ),
            "parted.toml",
        )
        .unwrap();
        assert_eq!(parted.part.len(), 1, "the replacement above must apply");
        let mut parted_names: Vec<String> = parted
            .expand("parted.toml")
            .unwrap()
            .iter()
            .map(|s| s.dir_name())
            .collect();
        parted_names.sort();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(parted_names, sorted);
    }

    /// Keys of every method kind, both optimizers, every LR schedule, warm-up,
    /// augmentation, the three allocations, AP's options and window, a non-default init
    /// and eval batch, and RigL's filled-in dense layer. Each expected name was derived by
    /// hand: `tests/reference/run_key.py` hashes the canonical JSON written out from the
    /// documented fields and defaults, not by this code. Each TOML below names only what
    /// differs from the defaults, so the defaults' serialisation is pinned too.
    #[test]
    #[allow(clippy::too_many_lines)] // one golden value per method kind, each spelled out
    fn golden_run_keys_of_every_method_kind() {
        let _g = ap_testkit::torch_lock();
        let cases = [
            (
                r#"model = "conv2"
dataset = "fashion-mnist"
seed = 1
[train]
batch_size = 128
iterations = 300
warmup_iterations = 50
optimizer = { kind = "sgd", lr = 0.1, momentum = 0.9, weight_decay = 5e-4 }
schedule = { kind = "step", milestones = [100, 200], gamma = 0.1 }
[prune]
method = "lrr"
rounds = 3
rate = 0.2
criterion = "random"
allocation = "uniform"
[ap]
enabled = true
"#,
                "lrr-random+ap-conv2-fashion-mnist-s1-2f0f26a30950dc61",
            ),
            (
                r#"model = "resnet20"
dataset = "fashion-mnist"
seed = 0
init = "openlth"
eval_batch_size = 500
[train]
batch_size = 128
iterations = 1000
optimizer = { kind = "sgd", lr = 0.1, momentum = 0.9, weight_decay = 1e-4, nesterov = true }
schedule = { kind = "cosine" }
augment = { crop_padding = 4, horizontal_flip = true }
[prune]
method = "imp"
rounds = 5
rate = 0.2
criterion = "lamp"
rewind_iteration = 200
"#,
                "imp-rewind-lamp-resnet20-fashion-mnist-s0-ffe654907e978873",
            ),
            (
                r#"model = "lenet300-100"
dataset = "mnist"
seed = 2
[train]
batch_size = 60
iterations = 2000
optimizer = { kind = "adam", lr = 1.2e-3 }
[prune]
method = "one_shot"
density = 0.05
criterion = "snip"
at_init = true
[ap]
enabled = true
"#,
                "pai-snip+ap-lenet300-100-mnist-s2-dccacd56f6ab37ff",
            ),
            (
                r#"model = "lenet300-100"
dataset = "mnist"
seed = 0
init = "xavier_normal"
[train]
batch_size = 60
iterations = 2000
optimizer = { kind = "adam", lr = 1e-3, beta1 = 0.8, beta2 = 0.99 }
[prune]
method = "one_shot"
density = 0.1
criterion = "lamp"
fine_tune_iterations = 500
snip_batches = 4
allocation = { per_layer = { overrides = { "fc3.weight" = 0.5 } } }
"#,
                "one-shot-lamp-lenet300-100-mnist-s0-f2a2096c5fe69858",
            ),
            (
                r#"model = "lenet300-100"
dataset = "mnist"
seed = 0
[train]
batch_size = 60
iterations = 6000
optimizer = { kind = "adam", lr = 1.2e-3, weight_decay = 1e-4 }
schedule = { kind = "cosine" }
[prune]
method = "gmp"
final_density = 0.03125
begin = 500
end = 4500
every = 100
[ap]
enabled = true
"#,
                "gmp+ap-lenet300-100-mnist-s0-766caa5cc626029d",
            ),
            (
                r#"model = "conv2"
dataset = "fashion-mnist"
seed = 0
[train]
batch_size = 64
iterations = 3000
optimizer = { kind = "sgd", lr = 0.05 }
[prune]
method = "granet"
final_density = 0.02
initial_density = 0.5
begin = 100
end = 2000
every = 100
drop_fraction = 0.3
[ap]
enabled = true
share = 0.2
in_drop_and_grow = true
options = { sign = "any", score = "magnitude" }
from_event = 2
until_event = 10
"#,
                "granet+ap-conv2-fashion-mnist-s0-39ff2d97dae329f2",
            ),
            (
                r#"model = "lenet300-100"
dataset = "mnist"
seed = 3
[train]
batch_size = 60
iterations = 6000
optimizer = { kind = "adam", lr = 1.2e-3 }
[prune]
method = "rigl"
density = 0.03125
[ap]
enabled = true
in_drop_and_grow = true
options = { score = { random = { seed = 7 } } }
"#,
                "rigl+ap-lenet300-100-mnist-s3-6411e93057a2babc",
            ),
        ];
        for (toml, expected) in cases {
            let spec = RunSpec::parse(toml, "case.toml").unwrap();
            spec.validate().unwrap();
            assert_eq!(spec.dir_name(), expected, "{}", spec.canonical_json());
        }
    }

    #[test]
    fn parts_merge_over_the_base_and_duplicates_are_errors() {
        let _g = ap_testkit::torch_lock();
        let text = |parts: &str| {
            format!(
                "name = \"g\"\n[base]\nmodel = \"lenet300-100\"\ndataset = \"mnist\"\nseed = 0\n[base.train]\nbatch_size = 60\niterations = 100\noptimizer = {{ kind = \"adam\", lr = 1e-3 }}\n[base.prune]\nmethod = \"imp\"\nrounds = 1\nrate = 0.2\n{parts}"
            )
        };
        let g: GridSpec = parse_toml(
            &text("[[part]]\nbase = { train = { iterations = 50 } }\n[[part]]\nbase = { model = \"conv2\", dataset = \"fashion-mnist\" }\naxes = { seed = [1, 2] }\n"),
            "g.toml",
        )
        .unwrap();
        let specs = g.expand("g.toml").unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].train.iterations, 50);
        assert_eq!(specs[0].train.batch_size, 60, "tables merge, not replace");
        assert_eq!((specs[1].model.name(), specs[1].seed), ("conv2", 1));
        assert_eq!(specs[2].train.iterations, 100);
        let dup: GridSpec =
            parse_toml(&text("[[part]]\n[[part]]\nname = \"again\"\n"), "d.toml").unwrap();
        let err = dup.expand("d.toml").unwrap_err().to_string();
        assert!(
            err.contains("again") && err.contains("earlier part"),
            "{err}"
        );
    }
}
