//! Spec, grid and training-configuration fixtures as `toml::Value`s, edited by path
//! instead of by text replacement.
//!
//! The test kit depends on no crate of the workspace (it is a dev-dependency of them
//! all), so these are shaped like the workspace's types but untyped: the caller turns one
//! into its type with `toml::Value::try_into` (`let cfg: TrainConfig =
//! fixtures::train(fixtures::adam(1e-3), 32, 200).try_into().unwrap()`), or writes it as
//! a file for the `ap` program ([`write_toml`]).

use std::path::{Path, PathBuf};
use toml::Value;

/// Editing a TOML value by dotted path.
pub trait TomlExt: Sized {
    /// This value with `path` (dotted: `train.iterations`) set to `value`; the tables on
    /// the way are made when missing.
    ///
    /// # Panics
    /// When something on the way is not a table.
    fn with(self, path: &str, value: impl Into<Value>) -> Self;

    /// The value at `path`, if there is one.
    fn at(&self, path: &str) -> Option<&Value>;

    /// This value as the text of a TOML file.
    fn to_toml(&self) -> String;
}

impl TomlExt for Value {
    fn with(mut self, path: &str, value: impl Into<Value>) -> Value {
        let mut cur = &mut self;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let table = cur
                .as_table_mut()
                .unwrap_or_else(|| panic!("setting `{path}`: `{part}` is not inside a table"));
            if parts.peek().is_none() {
                table.insert(part.to_string(), value.into());
                break;
            }
            cur = table
                .entry(part)
                .or_insert_with(|| Value::Table(Default::default()));
        }
        self
    }

    fn at(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(self, |v, part| v.get(part))
    }

    fn to_toml(&self) -> String {
        toml::to_string(self).expect("a TOML table serialises")
    }
}

/// An empty TOML table, to build on with [`TomlExt::with`].
pub fn table() -> Value {
    Value::Table(Default::default())
}

/// `{ kind = "adam", lr }`: Adam with PyTorch's defaults for the rest.
pub fn adam(lr: f64) -> Value {
    table().with("kind", "adam").with("lr", lr)
}

/// `{ kind = "sgd", lr, momentum, weight_decay, nesterov }`.
pub fn sgd(lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) -> Value {
    table()
        .with("kind", "sgd")
        .with("lr", lr)
        .with("momentum", momentum)
        .with("weight_decay", weight_decay)
        .with("nesterov", nesterov)
}

/// A training configuration (`ap_train::TrainConfig`'s shape): `optimizer`, batches of
/// `batch_size`, `iterations` steps, constant schedule, no warm-up, no augmentation.
pub fn train(optimizer: Value, batch_size: i64, iterations: i64) -> Value {
    table()
        .with("optimizer", optimizer)
        .with("batch_size", batch_size)
        .with("iterations", iterations)
}

/// The LeNet-300-100 / MNIST recipe of the tests: Adam 1.2e-3, batches of 60.
pub fn lenet_train(iterations: i64) -> Value {
    train(adam(1.2e-3), 60, iterations)
}

/// A run spec (`ap_runs::RunSpec`'s shape): LeNet-300-100 on MNIST, seed 3, 300 steps of
/// [`lenet_train`] per phase, IMP for 2 rounds at rate 0.2, AP on at rate 0.02.
pub fn lenet_mnist_spec() -> Value {
    table()
        .with("model", "lenet300-100")
        .with("dataset", "mnist")
        .with("seed", 3)
        .with("train", lenet_train(300))
        .with("prune.method", "imp")
        .with("prune.rounds", 2)
        .with("prune.rate", 0.2)
        .with("ap.enabled", true)
        .with("ap.rate", 0.02)
}

/// A grid (`ap_runs::GridSpec`'s shape) named `name` over `axes` (dotted spec paths and
/// their values, e.g. `("ap.enabled", vec![false, true].into())`), every run `base`.
pub fn grid_of(name: &str, axes: &[(&str, Value)], base: Value) -> Value {
    let mut axes_table = table();
    for (path, values) in axes {
        // An axis is named by its dotted path as one key, not a nested table.
        axes_table
            .as_table_mut()
            .expect("a table")
            .insert((*path).to_string(), values.clone());
    }
    table()
        .with("name", name)
        .with("axes", axes_table)
        .with("base", base)
}

/// Writes `value` as `dir/name` and returns the path.
pub fn write_toml(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value.to_toml())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_set_nested_values_and_grids_nest_the_spec_under_base() {
        let spec = lenet_mnist_spec().with("train.iterations", 150);
        assert_eq!(spec.at("train.iterations"), Some(&Value::Integer(150)));
        assert_eq!(spec.at("train.batch_size"), Some(&Value::Integer(60)));
        assert_eq!(spec.at("train.optimizer.kind"), Some(&Value::from("adam")));
        assert_eq!(spec.at("ap.rate"), Some(&Value::Float(0.02)));
        assert_eq!(spec.at("prune.nothing"), None);
        let grid = grid_of(
            "g",
            &[("ap.enabled", vec![false, true].into())],
            spec.clone(),
        );
        assert_eq!(grid.at("base"), Some(&spec));
        assert_eq!(grid.at("name"), Some(&Value::from("g")));
        let axis = &grid.at("axes").unwrap().as_table().unwrap()["ap.enabled"];
        assert_eq!(axis, &Value::from(vec![false, true]));
        let text = grid.to_toml();
        assert!(text.contains("\"ap.enabled\" = [false, true]"), "{text}");
        assert!(text.contains("[base.train]"), "{text}");
        let back: Value = toml::from_str(&text).unwrap();
        assert_eq!(back, grid);
        let sgd = sgd(0.1, 0.9, 5e-4, true);
        assert_eq!(sgd.at("nesterov"), Some(&Value::Boolean(true)));
        assert_eq!(sgd.at("weight_decay"), Some(&Value::Float(5e-4)));
        assert_eq!(
            train(adam(1e-3), 8, 3).at("optimizer.lr"),
            Some(&Value::Float(1e-3))
        );
    }

    #[test]
    #[should_panic(expected = "setting `model.depth`: `depth` is not inside a table")]
    fn a_path_through_a_value_panics() {
        let _ = lenet_mnist_spec().with("model.depth", 3);
    }
}
