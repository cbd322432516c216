//! The DNR probe on every device of `ap_testkit::devices()` (the CPU, and CUDA where
//! present or required by `AP_TEST_DEVICES`): the same report as on the CPU, to the bit,
//! over several batches and sites, and static DNR ≤ dynamic DNR.

use ap_eval::DnrProbe;
use ap_models::ActivationProbe;
use tch::{Device, Kind, Tensor};

/// Feeds `batches` (per site) to a fresh probe on `device`.
fn probe_on(device: Device, batches: &[(&str, Tensor)]) -> ap_eval::DnrReport {
    let mut probe = DnrProbe::new();
    for (site, a) in batches {
        probe.observe(site, &a.to_device(device));
    }
    probe.finish()
}

#[test]
fn dnr_on_each_device_equals_the_cpus() {
    let _g = ap_testkit::torch_lock();
    tch::manual_seed(0);
    let cpu = (Kind::Float, Device::Cpu);
    // Post-ReLU activations; channel 3 of the conv site and unit 5 of the dense site are
    // dead for every sample, so static DNR is not 0.
    let conv = |n: i64| {
        let a = Tensor::randn([n, 64, 8, 8], cpu).relu();
        let _ = a.narrow(1, 3, 1).zero_();
        a
    };
    let dense = |n: i64| {
        let a = (Tensor::randn([n, 100], cpu) - 1.0).relu();
        let _ = a.narrow(1, 5, 1).zero_();
        a
    };
    let batches = [
        ("conv", conv(256)),
        ("dense", dense(256)),
        ("conv", conv(100)),
        ("dense", dense(100)),
    ];
    let want = probe_on(Device::Cpu, &batches);
    assert_eq!(want.samples, 356);
    assert_eq!(want.sites.len(), 2);
    assert!(
        want.static_ > 0.0 && want.static_ <= want.dynamic,
        "{want:?}"
    );
    for site in &want.sites {
        assert!(site.static_ <= site.dynamic, "{site:?}");
    }
    for device in ap_testkit::devices() {
        let got = probe_on(device, &batches);
        assert_eq!(
            got, want,
            "{device:?}: the DNR report differs from the CPU's"
        );
    }
}
