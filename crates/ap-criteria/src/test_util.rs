//! Helpers shared by this crate's tests.

use ap_tensor::NamedParams;
use proptest::prelude::*;
use tch::{Kind, Tensor};

/// Named 1-D parameters `l0`, `l1`, … from host values.
pub fn named(vals: &[Vec<f32>]) -> NamedParams {
    NamedParams::from_entries(
        vals.iter()
            .enumerate()
            .map(|(i, v)| (format!("l{i}"), Tensor::from_slice(v)))
            .collect(),
    )
}

/// Boolean selections flattened into one host vector.
pub fn flat(ts: &[Tensor]) -> Vec<bool> {
    ts.iter()
        .flat_map(|t| Vec::<i64>::try_from(&t.to_kind(Kind::Int64)).unwrap())
        .map(|v| v != 0)
        .collect()
}

/// A few layers of half-integer values in [−2, 2): many ties, both signs, and empty
/// layers (numel 0) among them.
pub fn layers() -> impl Strategy<Value = Vec<Vec<f32>>> {
    prop::collection::vec(prop::collection::vec(-4i32..4, 0..30), 1..4).prop_map(|ls| {
        ls.into_iter()
            .map(|l| l.into_iter().map(|v| v as f32 / 2.0).collect())
            .collect()
    })
}
