//! Named training recipes: `train = { recipe = "openlth-resnet20" }` in a spec or grid
//! starts from the preset, and any other field of the table overrides it. Presets are
//! resolved before a spec is hashed, so a run written with a preset and the same run
//! written out in full have the same key, and each run's `spec.toml` shows every value.

use std::sync::OnceLock;

use anyhow::{bail, Result};

/// A named recipe: a `[train]` table to start from.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The name a spec gives it (`train = { recipe = "openlth-cifar" }`).
    pub name: String,
    /// What it is, and where it comes from.
    pub about: String,
    /// The initialisation of the paper the recipe comes from (ap-spec §5), which a spec
    /// gets unless it sets `init`; none: PyTorch's defaults (a spec's default).
    #[serde(default)]
    pub init: Option<String>,
    /// The `[train]` table.
    pub train: toml::Value,
}

/// The shipped recipes, in order: the data of `recipes.toml`.
pub fn recipes() -> &'static [Recipe] {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        recipe: Vec<Recipe>,
    }
    static RECIPES: OnceLock<Vec<Recipe>> = OnceLock::new();
    RECIPES.get_or_init(|| {
        let file: File =
            toml::from_str(include_str!("recipes.toml")).expect("shipped recipes parse");
        file.recipe
    })
}

/// The `[train]` table of a preset.
pub fn recipe(name: &str) -> Result<toml::Value> {
    match recipes().iter().find(|r| r.name == name) {
        Some(r) => Ok(r.train.clone()),
        None => bail!(
            "train.recipe = {name:?} is unknown; recipes: {}",
            recipes()
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Replaces `train.recipe` in a spec (as a TOML value) by the preset, with the table's
/// other fields merged over it.
pub fn resolve(spec: &mut toml::Value) -> Result<()> {
    rigl_dense_layers(spec);
    let Some(train) = spec.get_mut("train").and_then(|t| t.as_table_mut()) else {
        return Ok(());
    };
    let Some(name) = train.remove("recipe") else {
        return Ok(());
    };
    let Some(name) = name.as_str() else {
        bail!("train.recipe must be a string, e.g. \"openlth-cifar\"");
    };
    let name = name.to_string();
    let mut resolved = recipe(&name)?;
    crate::spec::merge(&mut resolved, &toml::Value::Table(train.clone()));
    let table = spec
        .as_table_mut()
        .expect("a spec with a train table is a table");
    table.insert("train".into(), resolved);
    if let Some(init) = recipe_init(&name) {
        table
            .entry("init")
            .or_insert_with(|| toml::Value::String(init.into()));
    }
    Ok(())
}

/// The initialisation of the paper a recipe comes from ([`Recipe::init`]).
pub fn recipe_init(name: &str) -> Option<&'static str> {
    recipes()
        .iter()
        .find(|r| r.name == name)
        .and_then(|r| r.init.as_deref())
}

/// RigL's dense layers, when a RigL spec names none: the configuration RigL published for
/// the model family (docs/decisions.md) — an MLP keeps its output layer dense (RigL's
/// MNIST setting), a CNN its first conv layer (its ImageNet setting). Written into the
/// spec, so the resolved spec records it.
fn rigl_dense_layers(spec: &mut toml::Value) {
    let model = spec
        .get("model")
        .and_then(|m| m.as_str())
        .and_then(|m| m.parse::<ap_models::ModelKind>().ok());
    let Some(prune) = spec.get_mut("prune").and_then(|p| p.as_table_mut()) else {
        return;
    };
    if prune.get("method").and_then(|m| m.as_str()) != Some("rigl")
        || prune.contains_key("dense_layers")
    {
        return;
    }
    // An unknown model is left to the spec's parse, whose error lists the valid names.
    let Some(model) = model else { return };
    let dense = model.rigl_dense_layers().iter();
    prune.insert(
        "dense_layers".into(),
        toml::Value::Array(dense.map(|&l| toml::Value::String(l.into())).collect()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_toml, RunSpec};

    #[test]
    fn every_recipe_is_a_valid_train_table() {
        assert_eq!(recipes().len(), 9);
        for r in recipes() {
            let t: ap_train::TrainConfig = recipe(&r.name).unwrap().try_into().unwrap();
            t.validate().unwrap();
            if let Some(init) = &r.init {
                let scheme: Result<ap_models::InitScheme, _> =
                    toml::Value::String(init.clone()).try_into();
                assert!(scheme.is_ok(), "{}: init = {init:?} is no scheme", r.name);
            }
        }
        assert_eq!(recipe_init("lth-lenet"), Some("xavier_normal"));
        assert_eq!(recipe_init("lenet5-caffe"), Some("caffe_xavier"));
        assert_eq!(recipe_init("cosine-sgd"), None);
    }

    /// A spec with a preset and the same spec written out have the same key.
    #[test]
    fn presets_resolve_before_hashing_and_fields_override() {
        let head = "model = \"resnet20\"\ndataset = \"cifar10\"\nseed = 0\n[prune]\nmethod = \"imp\"\nrounds = 1\nrate = 0.2\n";
        let preset: RunSpec = RunSpec::parse(
            &format!("{head}[train]\nrecipe = \"openlth-cifar\"\n"),
            "a.toml",
        )
        .unwrap();
        // The preset also sets its paper's initialisation (OpenLTH's).
        assert_eq!(preset.init, ap_models::InitScheme::Openlth);
        let with_init = head.replace("seed = 0\n", "seed = 0\ninit = \"openlth\"\n");
        let mut full: toml::Value = toml::from_str(&with_init).unwrap();
        full.as_table_mut()
            .unwrap()
            .insert("train".into(), recipe("openlth-cifar").unwrap());
        let full: RunSpec = parse_toml(&toml::to_string(&full).unwrap(), "b.toml").unwrap();
        assert_eq!(preset.key(), full.key());
        let own: RunSpec = RunSpec::parse(
            &format!(
                "{}[train]\nrecipe = \"openlth-cifar\"\n",
                head.replace("seed = 0\n", "seed = 0\ninit = \"pytorch\"\n")
            ),
            "d.toml",
        )
        .unwrap();
        assert_eq!(
            own.init,
            ap_models::InitScheme::Pytorch,
            "a spec's own init wins"
        );
        let over = RunSpec::parse(
            &format!("{head}[train]\nrecipe = \"openlth-cifar\"\niterations = 100\n"),
            "c.toml",
        )
        .unwrap();
        assert_eq!(over.train.iterations, 100);
        assert_eq!(over.train.batch_size, 128);
        let err =
            RunSpec::parse(&format!("{head}[train]\nrecipe = \"nope\"\n"), "d.toml").unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("d.toml") && err.contains("openlth-cifar"),
            "{err}"
        );
    }
}
