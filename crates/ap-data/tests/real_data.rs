//! Loads the real data sets from the default data dir, if `cargo xtask setup` has run.

use ap_data::{default_data_dir, Dataset, DatasetKind};
use tch::{Device, Kind};

fn check_real(kind: DatasetKind) {
    let dir = default_data_dir();
    if !dir.join(kind.subdir()).is_dir() {
        if std::env::var("AP_SKIP_REAL_DATA").as_deref() == Ok("1") {
            eprintln!(
                "skipped: no {kind} under {} (AP_SKIP_REAL_DATA=1)",
                dir.display()
            );
            return;
        }
        panic!(
            "no {kind} data under {}: run `cargo xtask setup` first (or set AP_SKIP_REAL_DATA=1 to skip)",
            dir.display()
        );
    }
    let ds = Dataset::load(kind, &dir, Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ds.train.images.size(), vec![60_000, 1, 28, 28]);
    assert_eq!(ds.train.labels.size(), vec![60_000]);
    assert_eq!(ds.test.images.size(), vec![10_000, 1, 28, 28]);
    assert_eq!(ds.test.labels.size(), vec![10_000]);
    for split in [&ds.train, &ds.test] {
        assert_eq!(split.labels.min().int64_value(&[]), 0);
        assert_eq!(split.labels.max().int64_value(&[]), 9);
    }
    let x = ds.train.images.to_kind(Kind::Double);
    let (mean, std) = (
        x.mean(Kind::Double).double_value(&[]),
        x.std(true).double_value(&[]),
    );
    assert!(
        mean.abs() < 0.01 && (std - 1.0).abs() < 0.01,
        "{kind}: normalised mean {mean}, std {std}"
    );
}

#[test]
fn real_mnist() {
    check_real(DatasetKind::Mnist);
}

#[test]
fn real_fashion_mnist() {
    check_real(DatasetKind::FashionMnist);
}
