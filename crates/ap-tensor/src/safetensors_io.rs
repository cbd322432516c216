//! Reading safetensors files with every header field checked in Rust first.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of UTF-8 JSON mapping each
//! tensor name to `{dtype, shape, data_offsets: [begin, end]}` (plus an optional
//! `__metadata__` map of strings), then the data bytes, which the tensors cover exactly,
//! back to back. A damaged file (truncated, flipped bytes, edited header) is an error that
//! names the file and the field, never a panic or an abort inside libtorch: the shapes,
//! offsets and dtypes are all validated, with overflow-checked arithmetic, before a tensor
//! is built.

use serde_json::{Map, Value};
use tch::{Kind, Tensor};

use crate::TensorError;

/// The largest header accepted (the `safetensors` crate's limit).
const MAX_HEADER: u64 = 100_000_000;

/// The dtypes libtorch can hold: name in the file, element size, tensor kind.
const DTYPES: [(&str, usize, Kind); 10] = [
    ("BOOL", 1, Kind::Bool),
    ("U8", 1, Kind::Uint8),
    ("I8", 1, Kind::Int8),
    ("I16", 2, Kind::Int16),
    ("F16", 2, Kind::Half),
    ("BF16", 2, Kind::BFloat16),
    ("I32", 4, Kind::Int),
    ("F32", 4, Kind::Float),
    ("I64", 8, Kind::Int64),
    ("F64", 8, Kind::Double),
];

/// One tensor's header entry, validated.
#[derive(Debug)]
struct Entry {
    name: String,
    kind: Kind,
    shape: Vec<i64>,
    begin: usize,
    end: usize,
}

/// Parses the bytes of a safetensors file into named tensors on the CPU, in header order
/// of their data; `source` (usually the path) names the file in errors.
pub fn parse_safetensors(bytes: &[u8], source: &str) -> Result<Vec<(String, Tensor)>, TensorError> {
    let bad = |reason: String| TensorError::BadFile {
        path: source.to_owned(),
        reason,
    };
    let (entries, data) = parse_header(bytes).map_err(bad)?;
    entries
        .into_iter()
        .map(|e| {
            let raw = &data[e.begin..e.end];
            if e.kind == Kind::Bool && raw.iter().any(|&b| b > 1) {
                return Err(bad(format!(
                    "tensor `{}`: BOOL data holds a byte other than 0 or 1",
                    e.name
                )));
            }
            let t = Tensor::f_from_data_size(raw, &e.shape, e.kind).map_err(|err| {
                TensorError::Torch {
                    context: format!("{source}: tensor `{}`", e.name),
                    source: err,
                }
            })?;
            Ok((e.name, t))
        })
        .collect()
}

/// Splits `bytes` into validated header entries (sorted by data offset) and the data.
fn parse_header(bytes: &[u8]) -> Result<(Vec<Entry>, &[u8]), String> {
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(format!(
            "the file is {} bytes, shorter than the 8-byte header length",
            bytes.len()
        ));
    };
    let n = u64::from_le_bytes(*len_bytes);
    if n > MAX_HEADER || n > rest.len() as u64 {
        return Err(format!(
            "header length {n} exceeds the {} bytes that follow it (limit {MAX_HEADER})",
            rest.len()
        ));
    }
    let (header, data) = rest.split_at(n as usize);
    let header = std::str::from_utf8(header)
        .map_err(|e| format!("the {n}-byte header is not UTF-8 ({e})"))?;
    let map: Map<String, Value> = serde_json::from_str(header)
        .map_err(|e| format!("the header is not a JSON object ({e})"))?;
    let mut entries = Vec::with_capacity(map.len());
    for (name, value) in &map {
        if name == "__metadata__" {
            check_metadata(value)?;
        } else {
            entries.push(parse_entry(name, value).map_err(|e| format!("tensor `{name}`: {e}"))?);
        }
    }
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut at = 0;
    for e in &entries {
        if e.begin != at {
            return Err(format!(
                "tensor `{}`: data_offsets start at {}, expected {at} (tensors must cover the \
                 data back to back, without gaps or overlaps)",
                e.name, e.begin
            ));
        }
        at = e.end;
    }
    if at != data.len() {
        return Err(format!(
            "the tensors cover {at} data bytes, but {} follow the header",
            data.len()
        ));
    }
    Ok((entries, data))
}

/// `__metadata__` must map strings to strings.
fn check_metadata(value: &Value) -> Result<(), String> {
    match value.as_object() {
        Some(m) if m.values().all(Value::is_string) => Ok(()),
        _ => Err("__metadata__ must be an object of strings".into()),
    }
}

/// Validates one tensor's `{dtype, shape, data_offsets}`.
fn parse_entry(name: &str, value: &Value) -> Result<Entry, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("expected an object, found {value}"))?;
    if let Some(extra) = obj
        .keys()
        .find(|k| !["dtype", "shape", "data_offsets"].contains(&k.as_str()))
    {
        return Err(format!("unknown field `{extra}`"));
    }
    let field = |k: &str| obj.get(k).ok_or_else(|| format!("missing field `{k}`"));
    let dtype = field("dtype")?;
    let (_, size, kind) = DTYPES
        .iter()
        .find(|(n, ..)| dtype.as_str() == Some(n))
        .ok_or_else(|| {
            let valid: Vec<&str> = DTYPES.iter().map(|d| d.0).collect();
            format!("dtype {dtype} is not one of {}", valid.join(", "))
        })?;
    let shape = u64_list(field("shape")?, "shape")?;
    let offsets = u64_list(field("data_offsets")?, "data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(format!(
            "data_offsets must be [begin, end], found {offsets:?}"
        ));
    };
    let too_big = || format!("shape {shape:?} is too large");
    let mut dims = Vec::with_capacity(shape.len());
    let (mut elems, mut span) = (1u64, 1i64);
    for &d in &shape {
        let d = i64::try_from(d).map_err(|_| too_big())?;
        elems = elems.checked_mul(d as u64).ok_or_else(too_big)?;
        // libtorch computes strides from the non-zero sizes: keep those in i64 too.
        span = span.checked_mul(d.max(1)).ok_or_else(too_big)?;
        dims.push(d);
    }
    let need = elems.checked_mul(*size as u64).ok_or_else(too_big)?;
    if end < begin || end - begin != need {
        return Err(format!(
            "data_offsets [{begin}, {end}] do not hold the {need} bytes of dtype {} and shape \
             {shape:?}",
            dtype.as_str().unwrap_or_default()
        ));
    }
    let offset = |v: u64| usize::try_from(v).map_err(|_| format!("data offset {v} is too large"));
    Ok(Entry {
        name: name.to_owned(),
        kind: *kind,
        shape: dims,
        begin: offset(begin)?,
        end: offset(end)?,
    })
}

/// A JSON array of non-negative integers.
fn u64_list(value: &Value, what: &str) -> Result<Vec<u64>, String> {
    value
        .as_array()
        .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
        .ok_or_else(|| format!("{what} must be a list of non-negative integers, found {value}"))
}
