//! Picking a slice of a grid: `--only` (substring of the run's directory name) and
//! `--filter key=value` (a field of the resolved spec, by dotted path, or a short alias).

use anyhow::{bail, Result};
use serde_json::Value;

use crate::spec::RunSpec;

/// Aliases for the fields people filter on most; anything else is a dotted path into the
/// resolved spec (`train.iterations=300`, `prune.rate=0.2`).
const ALIASES: &[(&str, &str)] = &[
    (
        "method",
        "the method label in tables, e.g. imp, imp-rewind, lrr, gmp, pai-snip",
    ),
    ("ap", "AP on or off: true / false (ap.enabled)"),
];

/// One `key=value` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    key: String,
    value: String,
}

impl std::str::FromStr for Filter {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(Filter {
                key: k.trim().to_string(),
                value: v.trim().to_string(),
            }),
            _ => bail!(
                "--filter {s:?}: expected key=value, e.g. model=conv2, method=imp, ap=true, seed=0, train.iterations=300"
            ),
        }
    }
}

impl Filter {
    /// True when `spec` has this value at this key. An unknown key is an error naming the
    /// valid ones, so a typo never silently selects nothing.
    pub fn matches(&self, spec: &RunSpec) -> Result<bool> {
        let have = match self.key.as_str() {
            "method" => Some(spec.method_name()),
            "ap" => Some(spec.ap.enabled.to_string()),
            path => {
                let json: Value = serde_json::from_str(&spec.canonical_json())?;
                lookup(&json, path).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            }
        };
        match have {
            Some(h) => Ok(h == self.value || numbers_equal(&h, &self.value)),
            None => bail!(
                "--filter {}: no field `{}` in the run spec; use a dotted path of the spec (model, dataset, seed, train.iterations, prune.method, ap.rate, ...) or {}",
                self.key,
                self.key,
                ALIASES
                    .iter()
                    .map(|(k, what)| format!("`{k}` ({what})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, part| v.get(part))
}

fn numbers_equal(a: &str, b: &str) -> bool {
    matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

/// The specs that match every filter and (when `only` is not empty) contain one of the
/// `only` substrings in their directory name.
pub fn select(specs: Vec<RunSpec>, only: &[String], filters: &[Filter]) -> Result<Vec<RunSpec>> {
    let mut out = vec![];
    for s in specs {
        let name = s.dir_name();
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let mut keep = true;
        for f in filters {
            keep &= f.matches(&s)?;
        }
        if keep {
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_toml, GridSpec};

    fn grid() -> Vec<RunSpec> {
        let g: GridSpec = parse_toml(
            r#"name = "g"
[axes]
seed = [0, 1]
"ap.enabled" = [false, true]
[base]
model = "lenet300-100"
dataset = "mnist"
seed = 0
[base.train]
batch_size = 60
iterations = 300
optimizer = { kind = "adam", lr = 1.2e-3 }
[base.prune]
method = "imp"
rounds = 2
rate = 0.2
"#,
            "g.toml",
        )
        .unwrap();
        g.expand("g.toml").unwrap()
    }

    #[test]
    fn filters_by_alias_path_and_substring() {
        let _g = ap_testkit::torch_lock();
        let all = grid();
        assert_eq!(all.len(), 4);
        let f = |s: &str| s.parse::<Filter>().unwrap();
        assert_eq!(select(all.clone(), &[], &[f("ap=true")]).unwrap().len(), 2);
        assert_eq!(
            select(all.clone(), &[], &[f("ap=true"), f("seed=1")])
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            select(all.clone(), &[], &[f("method=imp")]).unwrap().len(),
            4
        );
        assert_eq!(
            select(all.clone(), &[], &[f("train.iterations=300")])
                .unwrap()
                .len(),
            4
        );
        assert_eq!(
            select(all.clone(), &[], &[f("prune.rate=0.20")])
                .unwrap()
                .len(),
            4
        );
        assert_eq!(
            select(all.clone(), &[], &[f("model=conv2")]).unwrap().len(),
            0
        );
        assert_eq!(
            select(all.clone(), &["imp+ap".into()], &[]).unwrap().len(),
            2
        );
        assert_eq!(select(all.clone(), &["-s1-".into()], &[]).unwrap().len(), 2);
    }

    #[test]
    fn bad_filters_are_errors_that_name_the_fix() {
        let _g = ap_testkit::torch_lock();
        assert!("model"
            .parse::<Filter>()
            .unwrap_err()
            .to_string()
            .contains("key=value"));
        let err = select(grid(), &[], &["modle=conv2".parse().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("modle") && err.contains("dotted path"),
            "{err}"
        );
    }
}
