use ap_models::{build, ModelKind};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

use super::*;

/// A random 0/1 mask of `shape` keeping about `density`, plus whole rows and columns
/// removed (so there are units with no inputs and units with no outputs).
fn structured_mask(shape: &[i64], density: f64) -> Tensor {
    let m = Tensor::rand(shape, (Kind::Float, Device::Cpu)).lt(density);
    let rows = Tensor::rand([shape[0]], (Kind::Float, Device::Cpu)).gt(0.3);
    let cols = Tensor::rand([shape[1]], (Kind::Float, Device::Cpu)).gt(0.2);
    let mut rshape = vec![shape[0], 1];
    let mut cshape = vec![1, shape[1]];
    rshape.extend(std::iter::repeat_n(1, shape.len() - 2));
    cshape.extend(std::iter::repeat_n(1, shape.len() - 2));
    (m.logical_and(&rows.reshape(rshape.as_slice())))
        .logical_and(&cols.reshape(cshape.as_slice()))
        .to_kind(Kind::Float)
}

/// The model with random biases and batch-norm statistics (so folding and constants are
/// exercised), its masks, and the masks applied to its weights in place.
fn pruned_model(
    kind: ModelKind,
    input: &[i64],
    density: f64,
    seed: i64,
) -> (ap_models::Model, Vec<(String, Tensor)>) {
    tch::manual_seed(seed);
    let model = build(kind, input, 10, Device::Cpu).unwrap();
    let prunable = model.net.prunable();
    let mut masks = vec![];
    tch::no_grad(|| {
        for (name, t) in model.vs.variables() {
            if name.ends_with("running_var") {
                let _ = t.shallow_clone().uniform_(0.5, 2.0);
            } else if name.ends_with("running_mean") || name.ends_with(".bias") {
                let _ = t.shallow_clone().normal_(0.0, 0.5);
            } else if name.starts_with("bn") || name.contains(".bn") {
                let _ = t.shallow_clone().uniform_(0.5, 1.5);
            }
        }
        let vars = model.vs.variables();
        for name in &prunable {
            let w = &vars[name];
            let m = structured_mask(&w.size(), density);
            let _ = w.shallow_clone().g_mul_(&m);
            masks.push((name.clone(), m));
        }
    });
    (model, masks)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn weights(layers: &[Layer]) -> Vec<&Layer> {
    layers
        .iter()
        .filter(|l| matches!(l, Layer::Linear { .. } | Layer::Conv { .. }))
        .collect()
}

fn w_b(l: &Layer) -> (&Tensor, &Tensor, bool) {
    match l {
        Layer::Linear { weight, bias, .. } => (weight, bias, false),
        Layer::Conv {
            weight,
            bias,
            padding,
            ..
        } => (weight, bias, *padding > 0),
        _ => unreachable!(),
    }
}

/// The rule, checked independently on host values: between consecutive weight layers
/// (outside residual blocks, and inside each block's body), every unit has an input
/// weight (or emits a non-zero constant into a padded convolution) and an output weight;
/// every input the first layer sees is read.
fn assert_nothing_removable(layers: &[Layer], input_free: bool, what: &str) {
    for l in layers {
        if let Layer::Residual { body, .. } = l {
            assert_nothing_removable(body, false, what);
        }
    }
    let segments: Vec<&[Layer]> = layers
        .split(|l| matches!(l, Layer::Residual { .. }))
        .collect();
    for (s, seg) in segments.iter().enumerate() {
        let ws = weights(seg);
        for pair in ws.windows(2) {
            let (w, b, _) = w_b(pair[0]);
            let (nw, _, padded) = w_b(pair[1]);
            let units = w.size()[0];
            if units == 1 {
                continue;
            }
            let rows: Vec<f32> = Vec::try_from(w.reshape([units, -1]).abs().sum_dim_intlist(
                1,
                false,
                Kind::Float,
            ))
            .unwrap();
            let cols: Vec<f32> =
                Vec::try_from(nw.reshape([nw.size()[0], units, -1]).abs().sum_dim_intlist(
                    [0, 2].as_slice(),
                    false,
                    Kind::Float,
                ))
                .unwrap();
            let bias: Vec<f32> = Vec::try_from(b).unwrap();
            for j in 0..units as usize {
                assert!(
                    cols[j] > 0.0,
                    "{what}: a unit with no outgoing weight is left"
                );
                assert!(
                    rows[j] > 0.0 || (padded && bias[j] > 0.0),
                    "{what}: a unit with no incoming weight is left (bias {})",
                    bias[j]
                );
            }
        }
        if s == 0 && input_free {
            if let Some(first) = ws.first() {
                let (w, _, _) = w_b(first);
                let inputs = w.size()[1];
                let cols: Vec<f32> =
                    Vec::try_from(w.reshape([w.size()[0], inputs, -1]).abs().sum_dim_intlist(
                        [0, 2].as_slice(),
                        false,
                        Kind::Float,
                    ))
                    .unwrap();
                assert!(
                    inputs == 1 || cols.iter().all(|&c| c > 0.0),
                    "{what}: an unread input is left"
                );
            }
        }
    }
}

/// Every family: the inference network computes what the model does, the compacted one
/// what the masked one does, and nothing the rule removes is left.
#[test]
fn every_family_compacts_to_the_same_outputs() {
    let _g = ap_testkit::torch_lock();
    let cases: [(ModelKind, &[i64]); 7] = [
        (ModelKind::LeNet300_100, &[1, 28, 28]),
        (ModelKind::LeNet5, &[1, 28, 28]),
        (ModelKind::Conv2, &[3, 32, 32]),
        (ModelKind::Conv6, &[3, 32, 32]),
        (ModelKind::Vgg11, &[3, 32, 32]),
        (ModelKind::ResNet20, &[3, 32, 32]),
        (ModelKind::ResNet20B, &[3, 32, 32]),
    ];
    for (i, (kind, input)) in cases.into_iter().enumerate() {
        let (model, masks) = pruned_model(kind, input, 0.3, i as i64);
        let mut dims = vec![16];
        dims.extend(input);
        let x = Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu));
        let expected = tch::no_grad(|| model.forward(&x, false));
        let masked = InferenceNet::from_model(&model, &masks, input).unwrap();
        let y = masked.forward(&x);
        let scale = expected.abs().max().double_value(&[]).max(1.0);
        assert!(
            max_diff(&y, &expected) <= 1e-4 * scale,
            "{kind}: the graph differs from forward by {}",
            max_diff(&y, &expected)
        );
        let (compact, changes) = masked.compact();
        let z = compact.forward(&x);
        assert!(
            max_diff(&z, &y) <= 1e-4 * scale,
            "{kind}: compaction changed outputs by {}",
            max_diff(&z, &y)
        );
        assert_nothing_removable(&compact.layers, true, kind.name());
        let (before, after) = (masked.cost(), compact.cost());
        assert!(after.params < before.params, "{kind}: {changes:?}");
        assert!(after.macs < before.macs, "{kind}");
        assert!(after.nonzero_macs <= before.nonzero_macs, "{kind}");
        // Compaction is idempotent.
        let (again, _) = compact.compact();
        assert_eq!(again.cost(), after, "{kind}");
    }
}

/// A hand-made case with the result worked out by hand: x ∈ ℝ³ → 3 hidden → 2 outputs.
/// Input 2 is unread; hidden unit 0 has no inputs and bias 2 (constant ReLU(2) = 2, folded:
/// the output bias gains 2·W2[:, 0]); hidden unit 1 has no outputs.
#[test]
fn the_rules_on_a_hand_made_network() {
    let _g = ap_testkit::torch_lock();
    let f = |v: &[f32], shape: &[i64]| Tensor::from_slice(v).reshape(shape);
    let net = InferenceNet {
        input: vec![3],
        layers: vec![
            Layer::Flatten,
            Layer::Linear {
                name: "fc1".into(),
                weight: f(&[0., 0., 0., 1., 2., 0., 3., 4., 0.], &[3, 3]),
                bias: f(&[2., 1., -1.], &[3]),
            },
            Layer::Relu,
            Layer::Linear {
                name: "fc2".into(),
                weight: f(&[1., 0., 5., 2., 0., 6.], &[2, 3]),
                bias: f(&[0.5, -0.5], &[2]),
            },
        ],
    };
    let (c, changes) = net.compact();
    assert_eq!(
        changes.layers[0],
        LayerChange {
            name: "fc1".into(),
            outputs: [3, 1],
            inputs: [3, 2]
        }
    );
    assert_eq!(
        changes.layers[1],
        LayerChange {
            name: "fc2".into(),
            outputs: [2, 2],
            inputs: [3, 1]
        }
    );
    let Layer::Gather { index } = &c.layers[1] else {
        panic!("{:?}", c.layers)
    };
    assert_eq!(Vec::<i64>::try_from(index).unwrap(), vec![0, 1]);
    let Layer::Linear { weight, bias, .. } = &c.layers[4] else {
        panic!()
    };
    assert_eq!(
        Vec::<f32>::try_from(weight.flatten(0, -1)).unwrap(),
        vec![5., 6.]
    );
    assert_eq!(
        Vec::<f32>::try_from(bias).unwrap(),
        vec![0.5 + 2.0, -0.5 + 4.0]
    );
    let x = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
    assert!(max_diff(&c.forward(&x), &net.forward(&x)) < 1e-6);
}

/// A constant that is not zero does not fold through a padded convolution (the border
/// sees the padding): that unit stays; a zero constant's unit goes.
#[test]
fn constants_into_a_padded_convolution() {
    let _g = ap_testkit::torch_lock();
    tch::manual_seed(1);
    let conv = |name: &str, w: Tensor, b: Tensor| Layer::Conv {
        name: name.into(),
        weight: w,
        bias: b,
        stride: 1,
        padding: 1,
    };
    let w1 = Tensor::randn([3, 1, 3, 3], (Kind::Float, Device::Cpu));
    let _ = w1.get(0).zero_();
    let _ = w1.get(1).zero_();
    let net = InferenceNet {
        input: vec![1, 6, 6],
        layers: vec![
            conv("c1", w1, Tensor::from_slice(&[1.5f32, -1.0, 0.3])),
            Layer::Relu,
            conv(
                "c2",
                Tensor::randn([2, 3, 3, 3], (Kind::Float, Device::Cpu)),
                Tensor::zeros([2], (Kind::Float, Device::Cpu)),
            ),
        ],
    };
    let (c, changes) = net.compact();
    assert_eq!(
        changes.layers[0].outputs,
        [3, 2],
        "unit 0 (constant 1.5) stays, unit 1 (ReLU(−1) = 0) goes"
    );
    let x = Tensor::randn([4, 1, 6, 6], (Kind::Float, Device::Cpu));
    assert!(max_diff(&c.forward(&x), &net.forward(&x)) < 1e-5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random MLPs and masks: the compacted network computes the same function and
    /// leaves nothing the rule removes.
    #[test]
    fn random_mlps_compact_exactly(
        dims in proptest::collection::vec(1i64..12, 3..6),
        density in 0.05f64..0.9,
        seed in 0i64..1000,
    ) {
        let _g = ap_testkit::torch_lock();
        tch::manual_seed(seed);
        let mut layers = vec![Layer::Flatten];
        for (i, w) in dims.windows(2).enumerate() {
            let mask = Tensor::rand([w[1], w[0]], (Kind::Float, Device::Cpu)).lt(density).to_kind(Kind::Float);
            layers.push(Layer::Linear {
                name: format!("fc{i}"),
                weight: Tensor::randn([w[1], w[0]], (Kind::Float, Device::Cpu)) * mask,
                bias: Tensor::randn([w[1]], (Kind::Float, Device::Cpu)),
            });
            if i + 2 < dims.len() {
                layers.push(Layer::Relu);
            }
        }
        let net = InferenceNet { input: vec![dims[0]], layers };
        let (c, _) = net.compact();
        let x = Tensor::randn([8, dims[0]], (Kind::Float, Device::Cpu));
        prop_assert!(max_diff(&c.forward(&x), &net.forward(&x)) < 1e-4);
        assert_nothing_removable(&c.layers, true, "mlp");
    }
}

/// Removing the units no sample activates is exact on those samples, removes every such
/// unit, and only there differs from plain compaction; residual networks are refused.
#[test]
fn inactive_units_go_exactly_on_their_data() {
    let _g = ap_testkit::torch_lock();
    let (model, masks) = pruned_model(ModelKind::LeNet5, &[1, 28, 28], 0.3, 11);
    let mut masked = InferenceNet::from_model(&model, &masks, &[1, 28, 28]).unwrap();
    // Negative-biased fc1 units never fire on these inputs.
    if let Layer::Linear { bias, .. } = &mut masked.layers[7] {
        let _ = bias.narrow(0, 0, 100).fill_(-1e3);
    }
    let x = Tensor::randn([64, 1, 28, 28], (Kind::Float, Device::Cpu));
    let (lean, changes, inactive) = masked.compact_without_inactive(&x, 16).unwrap();
    assert!(inactive >= 100, "{inactive}");
    let plain = masked.compact().0;
    assert!(lean.cost().params < plain.cost().params, "{changes:?}");
    let y = masked.forward(&x);
    assert!(max_diff(&lean.forward(&x), &y) <= 1e-4 * y.abs().max().double_value(&[]).max(1.0));
    // Nothing inactive is left on x.
    let (_, _, again) = lean.compact_without_inactive(&x, 64).unwrap();
    assert_eq!(again, 0);
    let (resnet, masks) = pruned_model(ModelKind::ResNet20, &[3, 32, 32], 0.3, 12);
    let r = InferenceNet::from_model(&resnet, &masks, &[3, 32, 32]).unwrap();
    let err = r
        .compact_without_inactive(
            &Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
            2,
        )
        .unwrap_err();
    assert!(err.to_string().contains("residual"), "{err}");
}
