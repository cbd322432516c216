//! Exact-count selection on every device of `ap_testkit::devices()` (the CPU, and CUDA
//! where present or required by `AP_TEST_DEVICES`): the same positions as on the CPU,
//! with many ties, globally and per tensor.

use ap_tensor::{select_smallest, select_smallest_per_tensor};
use tch::{Device, Kind, Tensor};

fn refs(ts: &[Tensor]) -> Vec<&Tensor> {
    ts.iter().collect()
}

#[test]
fn exact_selection_on_each_device_equals_the_cpus() {
    let _g = ap_testkit::torch_lock();
    tch::manual_seed(0);
    let cpu = (Kind::Float, Device::Cpu);
    // Integer scores in 0..1000 over 1M positions: every score is tied ~1000 times, so the
    // tie rule (earlier position first) decides the boundary.
    let scores = [
        Tensor::randint(1000, [600_000], cpu),
        Tensor::randint(1000, [400, 1000], cpu),
    ];
    let eligible: Vec<Tensor> = scores
        .iter()
        .map(|s| Tensor::rand_like(s).gt(0.3))
        .collect();
    let n = 123_457;
    let want = select_smallest(&refs(&scores), &refs(&eligible), n).unwrap();
    let want_per =
        select_smallest_per_tensor(&refs(&scores), &refs(&eligible), &[40_000, 1]).unwrap();
    let count = |sel: &[Tensor]| -> i64 {
        sel.iter()
            .map(|t| t.sum(Kind::Int64).int64_value(&[]))
            .sum()
    };
    assert_eq!(count(&want), n);
    for device in ap_testkit::devices() {
        let on = |ts: &[Tensor]| ts.iter().map(|t| t.to_device(device)).collect::<Vec<_>>();
        let (s, e) = (on(&scores), on(&eligible));
        let got = select_smallest(&refs(&s), &refs(&e), n).unwrap();
        let got_per = select_smallest_per_tensor(&refs(&s), &refs(&e), &[40_000, 1]).unwrap();
        for (what, got, want) in [("global", &got, &want), ("per tensor", &got_per, &want_per)] {
            for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                assert_eq!(g.device(), device, "{what}: result stays on the device");
                assert!(
                    g.to_device(Device::Cpu).equal(w),
                    "{device:?}, {what}: tensor {i} selects other positions than the CPU"
                );
            }
        }
        // Asking for more than the eligible count is the same error everywhere.
        let too_many = e
            .iter()
            .map(|t| t.sum(Kind::Int64).int64_value(&[]))
            .sum::<i64>()
            + 1;
        assert!(
            select_smallest(&refs(&s), &refs(&e), too_many).is_err(),
            "{device:?}"
        );
    }
}
