//! Loads the real data sets from the default data dir. MNIST and Fashion-MNIST come with
//! `cargo xtask setup`: missing, they fail (`AP_REQUIRE_DATA=0` makes that a skip). CIFAR
//! is in no registry: missing, it is a skip that says so on stderr (`AP_REQUIRE_CIFAR=1`
//! makes it a failure). See `ap_testkit::prereq`.

use ap_data::{default_data_dir, Dataset, DatasetKind};
use ap_testkit::{missing_prerequisite, WhenUnset};
use tch::{Device, Kind, Tensor};

fn check_real(kind: DatasetKind) {
    let dir = default_data_dir();
    if !dir.join(kind.subdir()).is_dir() {
        missing_prerequisite(
            &format!("real_data {kind}"),
            &format!(
                "no {kind} data under {}: run `cargo xtask setup` first",
                dir.display()
            ),
            "AP_REQUIRE_DATA",
            WhenUnset::Fail,
        );
        return;
    }
    let ds = Dataset::load(kind, &dir, Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ds.train.images.size(), vec![60_000, 1, 28, 28]);
    assert_eq!(ds.train.len(), kind.train_examples());
    assert_eq!(ds.train.labels.size(), vec![60_000]);
    assert_eq!(ds.test.images.size(), vec![10_000, 1, 28, 28]);
    assert_eq!(ds.test.labels.size(), vec![10_000]);
    for split in [&ds.train, &ds.test] {
        assert_eq!(split.labels.min().int64_value(&[]), 0);
        assert_eq!(split.labels.max().int64_value(&[]), 9);
    }
    let (mean, std) = mean_std(&ds.train.images);
    assert!(
        mean.abs() < 0.01 && (std - 1.0).abs() < 0.01,
        "{kind}: normalised mean {mean}, std {std}"
    );
}

/// Mean and standard deviation of every value of `x`.
fn mean_std(x: &Tensor) -> (f64, f64) {
    let x = x.to_kind(Kind::Double);
    (
        x.mean(Kind::Double).double_value(&[]),
        x.std(true).double_value(&[]),
    )
}

#[test]
fn real_mnist_and_fashion_mnist() {
    for kind in [DatasetKind::Mnist, DatasetKind::FashionMnist] {
        check_real(kind);
    }
}

/// CIFAR is not fetched by `cargo xtask setup` (it is in no registry), so these only run when
/// the user has put the binary version under the data dir (or `$AP_CIFAR_DIR`).
fn check_real_cifar(kind: DatasetKind) {
    let dir = std::env::var_os("AP_CIFAR_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(default_data_dir);
    let ds = match Dataset::load(kind, &dir, Device::Cpu) {
        Ok(ds) => ds,
        Err(e @ ap_data::DataError::MissingCifarFile { .. }) => {
            missing_prerequisite(
                &format!("real_data {kind}"),
                &format!("{e} (these tests read $AP_CIFAR_DIR, else the data directory)"),
                "AP_REQUIRE_CIFAR",
                WhenUnset::Skip,
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(ds.train.images.size(), vec![50_000, 3, 32, 32]);
    assert_eq!(ds.train.len(), kind.train_examples());
    assert_eq!(ds.test.images.size(), vec![10_000, 3, 32, 32]);
    let max = kind.num_classes() as i64 - 1;
    for split in [&ds.train, &ds.test] {
        assert_eq!(split.labels.min().int64_value(&[]), 0);
        assert_eq!(split.labels.max().int64_value(&[]), max);
    }
    for c in 0..3 {
        let (mean, std) = mean_std(&ds.train.images.select(1, c));
        // The AP constants' stds are below the true ones, so normalised std is ≈ 1.2 for
        // CIFAR-10 and ≈ 1.0 for CIFAR-100.
        assert!(
            mean.abs() < 0.02 && (0.9..1.3).contains(&std),
            "{kind} channel {c}: normalised mean {mean}, std {std}"
        );
    }
}

#[test]
fn real_cifar10_and_cifar100_if_present() {
    for kind in [DatasetKind::Cifar10, DatasetKind::Cifar100] {
        check_real_cifar(kind);
    }
}
