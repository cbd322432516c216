//! Fuzzing the safetensors reader with property tests: a file written by
//! [`save_safetensors`] (the writer checkpoints and masks use) is truncated, has bytes
//! flipped, or has its header length or one header field (dtype, shape, data_offsets,
//! name) replaced. No case may panic or abort, a valid result must hold tensors of the
//! sizes the header promises, and an invalid one must be an error naming the file.

use ap_tensor::{load_safetensors, parse_safetensors, save_safetensors, TensorError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

const SOURCE: &str = "fuzz/ckpt-7.safetensors";
const CASES: u32 = 20000;

/// A small checkpoint-like file of several dtypes and ranks, as the project writes it.
fn real_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let tensors = vec![
        (
            "fc1.weight".to_string(),
            Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]),
        ),
        (
            "fc1.mask".to_string(),
            Tensor::from_slice(&[1u8, 0, 1, 1, 0]),
        ),
        (
            "opt.step".to_string(),
            Tensor::from_slice(&[7i64, 8, 9, 10]).view([2, 2]),
        ),
        ("scalar".to_string(), Tensor::from(2.5f64)),
        (
            "empty".to_string(),
            Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)),
        ),
    ];
    save_safetensors(&path, &tensors).unwrap();
    std::fs::read(&path).unwrap()
}

/// The header length, the header JSON and the data of a well-formed file.
fn split(bytes: &[u8]) -> (usize, Map<String, Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (n, header, bytes[8 + n..].to_vec())
}

fn join(header: &Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    out
}

/// Parses `bytes`: no panic; Ok only with tensors that match their header entries; an
/// error must name the source.
fn check(bytes: &[u8], must_fail: bool) -> Result<(), TestCaseError> {
    match parse_safetensors(bytes, SOURCE) {
        Ok(tensors) => {
            prop_assert!(!must_fail, "an invalid file was accepted");
            let (_, header, data) = split(bytes);
            let listed = header.keys().filter(|k| *k != "__metadata__").count();
            prop_assert_eq!(tensors.len(), listed);
            let total: usize = tensors
                .iter()
                .map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes())
                .sum();
            prop_assert_eq!(total, data.len());
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.contains(SOURCE), "{}", msg);
            prop_assert!(msg.len() > SOURCE.len() + 10, "{}", msg);
        }
    }
    Ok(())
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn truncation_is_always_an_error() {
    let _g = ap_testkit::torch_lock();
    let file = real_file();
    runner()
        .run(&(0..file.len()), |cut| check(&file[..cut], true))
        .unwrap();
}

#[test]
fn flipped_bytes_never_panic() {
    let _g = ap_testkit::torch_lock();
    let file = real_file();
    let flips = prop::collection::vec((0..file.len(), 1u8..=255), 1..6);
    runner()
        .run(&flips, |flips| {
            let mut bytes = file.clone();
            for (at, x) in flips {
                bytes[at] ^= x;
            }
            // Flips confined to the data region leave a valid file.
            check(&bytes, false)
        })
        .unwrap();
}

#[test]
fn a_wrong_header_length_is_an_error() {
    let _g = ap_testkit::torch_lock();
    let file = real_file();
    let n = u64::from_le_bytes(file[..8].try_into().unwrap());
    let len = prop_oneof![
        any::<u64>(),
        (n.saturating_sub(64)..n + 64),
        Just(u64::MAX),
        Just(100_000_001u64),
    ]
    .prop_filter("changed", move |&v| v != n);
    runner()
        .run(&len, |len| {
            let mut bytes = file.clone();
            bytes[..8].copy_from_slice(&len.to_le_bytes());
            check(&bytes, true)
        })
        .unwrap();
}

/// A JSON value of the kinds a header field might be edited to.
fn json_value() -> impl Strategy<Value = Value> {
    let num = prop_oneof![
        any::<u64>(),
        0u64..64,
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(1u64 << 63),
        Just(1u64 << 32),
    ];
    prop_oneof![
        prop::collection::vec(num.clone(), 0..5).prop_map(|v| json!(v)),
        num.prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!([n, 3])),
        "[A-Z0-9_]{0,6}".prop_map(|s| json!(s)),
        prop::sample::select(vec![
            "BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "I64", "U64",
            "F64", "F8_E5M2",
        ])
        .prop_map(|s| json!(s)),
        Just(json!(null)),
        Just(json!({"dtype": "F32"})),
        Just(json!(1.5)),
    ]
}

#[test]
fn edited_header_fields_never_panic() {
    let _g = ap_testkit::torch_lock();
    let file = real_file();
    let (_, header, data) = split(&file);
    let names: Vec<String> = header.keys().cloned().collect();
    let field = prop::sample::select(vec![
        "dtype",
        "shape",
        "data_offsets",
        "extra",
        "__rename__",
        "__whole__",
    ]);
    let edit = (prop::sample::select(names), field, json_value(), 0usize..8);
    runner()
        .run(&edit, |(name, field, value, trim)| {
            let mut h = header.clone();
            match field {
                "__whole__" => {
                    h.insert(name, value);
                }
                "__rename__" => {
                    let v = h.remove(&name).unwrap();
                    h.insert(format!("{name}\u{0}x"), v);
                }
                f => {
                    if let Some(obj) = h.get_mut(&name).and_then(Value::as_object_mut) {
                        obj.insert(f.to_string(), value);
                    }
                }
            }
            // Sometimes also drop data bytes, so offsets and data disagree.
            let bytes = join(&h, &data[..data.len() - trim.min(data.len())]);
            check(&bytes, false)
        })
        .unwrap();
}

/// Inputs the `safetensors` crate's own validation overflowed on (a debug-build panic)
/// or that libtorch cannot shape: each is a clear error now.
#[test]
fn overflowing_and_unshapeable_headers_are_errors() {
    let _g = ap_testkit::torch_lock();
    let max = u64::MAX;
    for (entry, want) in [
        (
            json!({"dtype": "U8", "shape": [max], "data_offsets": [0, max]}),
            "too large",
        ),
        (
            json!({"dtype": "F32", "shape": [1u64 << 63, 0], "data_offsets": [0, 0]}),
            "too large",
        ),
        (
            json!({"dtype": "F32", "shape": [1u64 << 40, 1u64 << 40, 0], "data_offsets": [0, 0]}),
            "too large",
        ),
        (
            json!({"dtype": "F32", "shape": [2], "data_offsets": [4, 0]}),
            "data_offsets [4, 0]",
        ),
        (
            json!({"dtype": "U64", "shape": [0], "data_offsets": [0, 0]}),
            "dtype \"U64\" is not one of",
        ),
    ] {
        let mut h = Map::new();
        h.insert("w".into(), entry);
        let err = parse_safetensors(&join(&h, &[]), SOURCE).unwrap_err();
        assert!(matches!(err, TensorError::BadFile { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(SOURCE) && msg.contains("tensor `w`") && msg.contains(want),
            "{msg}"
        );
    }
    // BOOL bytes other than 0/1 are not booleans.
    let mut h = Map::new();
    h.insert(
        "b".into(),
        json!({"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}),
    );
    let msg = parse_safetensors(&join(&h, &[1, 2]), SOURCE)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`b`") && msg.contains("BOOL"), "{msg}");
    assert!(parse_safetensors(&join(&h, &[1, 0]), SOURCE).is_ok());
}

/// Through the file path: the error names the path, and an intact file reads back.
#[test]
fn damaged_files_on_disk_name_their_path() {
    let _g = ap_testkit::torch_lock();
    let file = real_file();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mask.safetensors");
    std::fs::write(&path, &file).unwrap();
    let back = load_safetensors(&path, Device::Cpu).unwrap();
    let names: Vec<&str> = back.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["empty", "fc1.mask", "fc1.weight", "opt.step", "scalar"]
    );
    assert_eq!(back[3].1.int64_value(&[1, 1]), 10);
    for cut in [0, 7, 8, 20, file.len() - 1] {
        std::fs::write(&path, &file[..cut]).unwrap();
        let msg = load_safetensors(&path, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&path.display().to_string()), "{cut}: {msg}");
    }
}
