//! Fuzzing [`Mask::load`] with property tests: a mask file written by [`Mask::save`] is
//! truncated or has bytes flipped. No case may panic; a loaded mask must fit the
//! parameters and hold only 0 and 1; anything else is an error naming the file.

use ap_mask::Mask;
use ap_tensor::NamedParams;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tch::{Device, Kind, Tensor};

fn params() -> NamedParams {
    NamedParams::from_entries(vec![
        (
            "fc1.weight".into(),
            Tensor::ones([4, 3], (Kind::Float, Device::Cpu)),
        ),
        (
            "fc2.weight".into(),
            Tensor::ones([5], (Kind::Float, Device::Cpu)),
        ),
    ])
}

/// A real mask file (0/1 u8 tensors, as runs write `mask.safetensors`) and its bytes.
fn saved(dir: &std::path::Path, p: &NamedParams) -> (std::path::PathBuf, Vec<u8>) {
    let mask = Mask::from_entries(vec![
        (
            "fc1.weight".into(),
            Tensor::from_slice(&[1f32, 0., 1., 1., 0., 0., 1., 1., 1., 0., 1., 0.]).view([4, 3]),
        ),
        (
            "fc2.weight".into(),
            Tensor::from_slice(&[0f32, 1., 1., 0., 1.]),
        ),
    ]);
    let path = dir.join("mask.safetensors");
    mask.save(&path).unwrap();
    assert!(Mask::load(&path, p).is_ok());
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn check(path: &std::path::Path, bytes: &[u8], p: &NamedParams) -> Result<(), TestCaseError> {
    std::fs::write(path, bytes).unwrap();
    match Mask::load(path, p) {
        Ok(m) => {
            for ((name, t), (_, w)) in m.iter().zip(p.iter()) {
                prop_assert_eq!(t.size(), w.size(), "{}", name);
                let bad = t.ne(0).logical_and(&t.ne(1)).any().int64_value(&[]);
                prop_assert_eq!(bad, 0, "{} holds a value other than 0/1", name);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.contains(&path.display().to_string()), "{}", msg);
        }
    }
    Ok(())
}

#[test]
fn damaged_mask_files_never_panic() {
    let _g = ap_testkit::torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let p = params();
    let (path, file) = saved(dir.path(), &p);
    let mutation = prop_oneof![
        (0..file.len()).prop_map(|cut| (Some(cut), vec![])),
        prop::collection::vec((0..file.len(), 1u8..=255), 1..4).prop_map(|f| (None, f)),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&mutation, |(cut, flips)| {
            let mut bytes = file.clone();
            for (at, x) in flips {
                bytes[at] ^= x;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            check(&path, &bytes, &p)
        })
        .unwrap();
}

/// A data byte that is neither 0 nor 1 is an error naming the file, tensor and value
/// (before the check it loaded, scaling the weight by 7).
#[test]
fn a_non_binary_entry_is_an_error() {
    let _g = ap_testkit::torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let p = params();
    let (path, mut bytes) = saved(dir.path(), &p);
    let last = bytes.len() - 1; // fc2.weight's last entry (data is laid out by dtype, then name)
    bytes[last] = 7;
    std::fs::write(&path, &bytes).unwrap();
    let msg = Mask::load(&path, &p).unwrap_err().to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("`fc2.weight` holds 7 at flat index 4"),
        "{msg}"
    );
}
