//! Tests of the registry and of every family: names, properties, shapes, parameter counts.

use super::*;
use proptest::prelude::*;
use tch::Kind;

struct Recorder(Vec<(String, Vec<i64>)>);
impl ActivationProbe for Recorder {
    fn observe(&mut self, site: &str, a: &Tensor) {
        self.0.push((site.to_string(), a.size()));
    }
}

#[test]
fn lenet_shapes_sites_and_parameters() {
    let _g = ap_testkit::torch_lock();
    let m = build(ModelKind::LeNet300_100, &[1, 28, 28], 10, Device::Cpu).unwrap();
    // 784*300+300 + 300*100+100 + 100*10+10 (the published 266,610)
    assert_eq!(m.num_parameters(), 266_610);
    assert_eq!(m.kind, Some(ModelKind::LeNet300_100));
    let mut rec = Recorder(vec![]);
    let y = m.forward_probed(
        &Tensor::zeros([5, 1, 28, 28], (Kind::Float, Device::Cpu)),
        false,
        &mut rec,
    );
    assert_eq!(y.size(), vec![5, 10]);
    assert_eq!(
        rec.0,
        vec![
            ("fc1.relu".to_string(), vec![5, 300]),
            ("fc2.relu".to_string(), vec![5, 100])
        ]
    );
    assert_eq!(
        m.net.relu_sites(),
        vec![("fc1.relu".to_string(), 300), ("fc2.relu".to_string(), 100)]
    );
    assert_eq!(
        m.net.prunable(),
        vec!["fc1.weight", "fc2.weight", "fc3.weight"]
    );
    ap_tensor::NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
}

/// Today's names, spelled out (a family a line): they are part of every run key and
/// must never change.
#[rustfmt::skip]
const NAMES: [&str; 14] = [
    "lenet300-100", "lenet5",
    "conv2", "conv4", "conv6",
    "resnet20", "resnet32", "resnet56",
    "resnet20-b", "resnet32-b", "resnet56-b",
    "vgg11", "vgg16", "vgg19",
];

#[test]
fn every_name_round_trips_through_from_str_display_and_serde() {
    assert_eq!(ModelKind::ALL.map(ModelKind::name), NAMES);
    for kind in ModelKind::ALL {
        let name = kind.name();
        assert_eq!(name.parse::<ModelKind>().unwrap(), kind);
        assert_eq!(kind.to_string(), name);
        assert_eq!(<&str>::from(kind), name);
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{name}\""), "serialises as the plain name");
        assert_eq!(serde_json::from_str::<ModelKind>(&json).unwrap(), kind);
    }
    // Inside a struct, as in a run spec: byte-identical to a `String` field.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Typed {
        model: ModelKind,
    }
    #[derive(serde::Serialize)]
    struct Plain<'a> {
        model: &'a str,
    }
    for kind in ModelKind::ALL {
        let typed = serde_json::to_string(&Typed { model: kind }).unwrap();
        let plain = serde_json::to_string(&Plain { model: kind.name() }).unwrap();
        assert_eq!(typed, plain);
        let back: Typed = serde_json::from_str(&plain).unwrap();
        assert_eq!(back.model, kind);
    }
    let e = serde_json::from_str::<Typed>(r#"{"model":"lenet7"}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unknown model `lenet7`") && e.contains("vgg19"),
        "{e}"
    );
}

#[test]
fn unknown_model_lists_valid_names() {
    let e = "lenet7".parse::<ModelKind>().unwrap_err().to_string();
    assert!(e.contains("`lenet7`"), "{e}");
    assert!(e.ends_with(&NAMES.join(", ")), "{e}");
}

proptest! {
    /// Only the exact registered spellings parse (names are part of run keys), and every
    /// rejection lists all valid names.
    #[test]
    fn only_registered_names_parse(name in "[a-zA-Z0-9 _-]{0,14}") {
        match name.parse::<ModelKind>() {
            Ok(kind) => prop_assert_eq!(kind.name(), name.as_str()),
            Err(e) => {
                prop_assert!(!NAMES.contains(&name.as_str()));
                let e = e.to_string();
                for valid in NAMES {
                    prop_assert!(e.contains(valid), "{}", e);
                }
            }
        }
    }

    /// Case and padding variants of a registered name are other names.
    #[test]
    fn variants_of_a_name_are_rejected(i in 0..13usize, pad in " |\t|_", upper in any::<bool>()) {
        let name = NAMES[i];
        let variant = if upper { name.to_uppercase() } else { format!("{pad}{name}") };
        prop_assert!(variant.parse::<ModelKind>().is_err());
    }
}

#[test]
fn properties_agree_with_the_names() {
    for kind in ModelKind::ALL {
        let name = kind.name();
        assert!(name.contains(&kind.depth().to_string()), "{name}");
        assert_eq!(kind.shortcut() == Some(Shortcut::B), name.ends_with("-b"));
        assert_eq!(
            kind.shortcut().is_some(),
            kind.family() == ModelFamily::ResNet
        );
        let prefix = match kind.family() {
            ModelFamily::Mlp | ModelFamily::LeNet5 => "lenet",
            ModelFamily::Conv => "conv",
            ModelFamily::ResNet => "resnet",
            ModelFamily::Vgg => "vgg",
        };
        assert!(name.starts_with(prefix), "{name}");
        assert_eq!(kind.is_mlp(), !kind.family().is_cnn());
    }
}

/// Counts how often each site is observed and checks the shape it reports.
#[derive(Default)]
struct Counter(Vec<(String, i64, usize)>);
impl ActivationProbe for Counter {
    fn observe(&mut self, site: &str, a: &Tensor) {
        let units: i64 = a.size()[1..].iter().product();
        match self.0.iter_mut().find(|(s, _, _)| s == site) {
            Some(e) => e.2 += 1,
            None => self.0.push((site.to_string(), units, 1)),
        }
    }
}

fn check(kind: ModelKind, input: &[i64], classes: i64, params: i64, sites: usize) {
    let m = build(kind, input, classes, Device::Cpu).unwrap();
    assert_eq!(m.kind, Some(kind));
    assert_eq!(m.num_parameters(), params, "{kind}");
    let mut c = Counter::default();
    let mut shape = vec![2];
    shape.extend_from_slice(input);
    for train in [true, false] {
        let y = m.forward_probed(
            &Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)),
            train,
            &mut c,
        );
        assert_eq!(y.size(), vec![2, classes]);
    }
    // every ReLU application is a listed site, seen once per forward pass (twice in total)
    let listed = m.net.relu_sites();
    assert_eq!(listed.len(), sites, "{kind}");
    assert_eq!(c.0.len(), listed.len(), "{kind}");
    for ((seen, units, count), (site, u)) in c.0.iter().zip(&listed) {
        assert_eq!((seen, units, *count), (site, u, 2), "{kind}");
    }
    ap_tensor::NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
}

/// Input, parameter count and number of ReLU sites of every registered model, derived by
/// hand (a new kind must add its row here):
/// - LeNet-300-100 on 1×28×28: 784·300+300 + 300·100+100 + 100·10+10 = 266,610.
/// - Conv-2 on 3×32×32: conv 3·64·9+64 = 1,792; 64·64·9+64 = 36,928; fc 16,384·256+256 =
///   4,194,560; 256·256+256 = 65,792; 256·10+10 = 2,570 → 4,301,642 (the paper's 4.3M).
/// - Conv-4: + conv 64·128·9+128 = 73,856, 128·128·9+128 = 147,584; fc 8,192·256+256 =
///   2,097,408 → 1,792+36,928+73,856+147,584+2,097,408+65,792+2,570 = 2,425,930 (2.4M).
/// - Conv-6: + 128·256·9+256 = 295,168, 256·256·9+256 = 590,080; fc 4,096·256+256 =
///   1,048,832 → 2,262,602 (1.7M in the paper counts conv and fc weights; ours adds biases).
/// - LeNet-5 (Caffe) on 1×28×28: conv1 20·25 + 20 = 520; conv2 50·20·25 + 50 = 25,050;
///   fc1 (50·4·4 = 800)·500 + 500 = 400,500; fc2 500·10 + 10 = 5,010 → 431,080 (Han et
///   al. 2015's ≈ 431K).
/// - ResNet-20 (option A, no conv bias): stem 432 + BN 32; stage 1: 3·(2·2,304 + 64) =
///   14,016; stage 2: 4,608+9,216+128 + 2·(2·9,216+128) = 51,072; stage 3:
///   18,432+36,864+256 + 2·(2·36,864+256) = 203,520; fc 650 → 269,722 (0.27M).
/// - ResNet-32: n = 5 per stage: 464 + 5·4,672 + (13,952 + 4·18,560) + (55,552 + 4·73,984)
///   + 650 = 464,154 (0.46M).
/// - ResNet-56: n = 9 per stage: 464 + 9·4,672 + (13,952 + 8·18,560) + (55,552 + 8·73,984)
///   + 650 = 853,018 (0.85M).
/// - Option B adds two projections, 16·32 + 2·32 and 32·64 + 2·64 = 2,752.
/// - VGG-11 (BN, no conv bias): conv weights 1,728 + 73,728 + 294,912 + 589,824 +
///   1,179,648 + 3·2,359,296 = 9,217,728; BN 2·2,752 = 5,504; fc 5,130 → 9,228,362 (9.2M).
/// - VGG-16: conv weights 1,728 + 36,864 + 73,728 + 147,456 + 294,912 + 2·589,824 +
///   1,179,648 + 5·2,359,296 = 14,710,464; BN 2·4,224 = 8,448; fc 5,130 → 14,724,042.
/// - VGG-19 (BN, no conv bias): conv weights 20,018,880; BN 2·5,504 = 11,008; fc 5,130
///   → 20,035,018 (20.0M).
fn expected(kind: ModelKind) -> (&'static [i64], i64, usize) {
    const CIFAR: &[i64] = &[3, 32, 32];
    match kind {
        ModelKind::LeNet300_100 => (&[1, 28, 28], 266_610, 2),
        ModelKind::LeNet5 => (&[1, 28, 28], 431_080, 3),
        ModelKind::Conv2 => (CIFAR, 4_301_642, 4),
        ModelKind::Conv4 => (CIFAR, 2_425_930, 6),
        ModelKind::Conv6 => (CIFAR, 2_262_602, 8),
        ModelKind::ResNet20 => (CIFAR, 269_722, 19),
        ModelKind::ResNet32 => (CIFAR, 464_154, 31),
        ModelKind::ResNet56 => (CIFAR, 853_018, 55),
        ModelKind::ResNet20B => (CIFAR, 269_722 + 2_752, 19),
        ModelKind::ResNet32B => (CIFAR, 464_154 + 2_752, 31),
        ModelKind::ResNet56B => (CIFAR, 853_018 + 2_752, 55),
        ModelKind::Vgg11 => (CIFAR, 9_228_362, 8),
        ModelKind::Vgg16 => (CIFAR, 14_724_042, 13),
        ModelKind::Vgg19 => (CIFAR, 20_035_018, 16),
    }
}

#[test]
fn every_kind_builds_with_its_parameter_count_and_relu_sites() {
    let _g = ap_testkit::torch_lock();
    for kind in ModelKind::ALL {
        let (input, params, sites) = expected(kind);
        check(kind, input, 10, params, sites);
    }
    // 640 + 36,928 + 12,544·256+256 + 65,792 + 2,570
    check(ModelKind::Conv2, &[1, 28, 28], 10, 3_317_450, 4);
}

#[test]
fn option_b_adds_projections() {
    let _g = ap_testkit::torch_lock();
    let a = build(ModelKind::ResNet20, &[3, 32, 32], 10, Device::Cpu).unwrap();
    let b = build(ModelKind::ResNet20B, &[3, 32, 32], 10, Device::Cpu).unwrap();
    // two projections: 16·32 + 2·32 and 32·64 + 2·64
    assert_eq!(
        b.num_parameters() - a.num_parameters(),
        512 + 64 + 2048 + 128
    );
    assert!(b.net.prunable().iter().any(|n| n.contains("shortcut")));
    assert!(!a.net.prunable().iter().any(|n| n.contains("shortcut")));
}

/// Each kind accepts exactly the inputs whose sides are divisible by `2^halvings`, and
/// `build` refuses the others with the same error before building anything.
#[test]
fn inputs_are_checked() {
    let _g = ap_testkit::torch_lock();
    for kind in ModelKind::ALL {
        let d = 1i64 << kind.halvings();
        let (h, w) = (2 * d.max(8), 3 * d.max(8)); // LeNet-5 needs at least 16
        kind.check_input(&[3, h, w]).unwrap();
        assert!(kind.check_input(&[3, 32]).is_err(), "{kind}");
        if d > 1 {
            let e = kind.check_input(&[3, 2 * d, 3 * d + d / 2]).unwrap_err();
            assert!(e.to_string().contains(&format!("divisible by {d}")), "{e}");
            let e = build(kind, &[1, d + d / 2, d], 10, Device::Cpu).unwrap_err();
            assert!(e.to_string().contains(kind.name()), "{e}");
        }
    }
    let e = ModelKind::LeNet5.check_input(&[1, 12, 12]).unwrap_err();
    assert!(e.to_string().contains("at least 16"), "{e}");
    assert!(build(ModelKind::Vgg16, &[3, 28, 28], 10, Device::Cpu)
        .unwrap_err()
        .to_string()
        .contains("divisible by 32"));
    let e = build(ModelKind::LeNet300_100, &[784], 10, Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("(C, H, W)"), "{e}");
}

/// `rigl_dense_layers` names what the rule it documents picks from the built model: the
/// last prunable layer of an MLP (all weights 2-D), the first of a CNN; `prunable_shapes`
/// lists the built model's prunable layers.
#[test]
fn rigl_dense_layers_follow_the_built_models() {
    let _g = ap_testkit::torch_lock();
    for kind in ModelKind::ALL {
        let (input, _, _) = expected(kind);
        let m = build(kind, input, 10, Device::Cpu).unwrap();
        let names = m.net.prunable();
        let vars = m.vs.variables();
        let mlp = names.iter().all(|n| vars[n].dim() == 2);
        assert_eq!(mlp, kind.is_mlp(), "{kind}");
        let pick = if mlp { names.last() } else { names.first() };
        assert_eq!(kind.rigl_dense_layers(), [pick.unwrap().as_str()], "{kind}");
        let listed: Vec<String> = prunable_shapes(kind, input, 10)
            .into_iter()
            .map(|(n, shape)| {
                assert_eq!(shape, vars[&n].size(), "{kind} {n}");
                n
            })
            .collect();
        assert_eq!(listed, names, "{kind}");
    }
}

#[test]
fn vgg_conv_widths_are_the_plans() {
    assert_eq!(Vgg::conv_widths(11).unwrap().len(), 8);
    assert_eq!(Vgg::conv_widths(16).unwrap().len(), 13);
    let w19 = Vgg::conv_widths(19).unwrap();
    assert_eq!(w19.len(), 16);
    assert_eq!((w19[0], w19[15]), (64, 512));
    assert_eq!(Vgg::conv_widths(13), None);
}

#[test]
fn init_schemes_set_statistics() {
    let _g = ap_testkit::torch_lock();
    tch::manual_seed(0);
    let m = build(ModelKind::ResNet20, &[3, 32, 32], 10, Device::Cpu).unwrap();
    initialise(&m, InitScheme::ApRelease);
    let vars = m.vs.variables();
    let bn = &vars["bn.weight"];
    assert!(
        (bn.mean(Kind::Float).double_value(&[]) - 1.0).abs() < 0.02
            && bn.std(true).double_value(&[]) > 0.0
    );
    assert_eq!(
        vars["bn.running_var"].mean(Kind::Float).double_value(&[]),
        1.0,
        "running statistics untouched"
    );
    let w = &vars["layer3.0.conv2.weight"]; // 64·64·9: xavier std = sqrt(2 / (576 + 576))
    assert!((w.std(true).double_value(&[]) - (2.0f64 / 1152.0).sqrt()).abs() < 0.002);
    initialise(&m, InitScheme::KaimingNormal);
    let w = &m.vs.variables()["layer3.0.conv2.weight"];
    assert!((w.std(true).double_value(&[]) - (2.0f64 / 576.0).sqrt()).abs() < 0.003);
    // Caffe's xavier filler on LeNet-5: U(±√(3/fan_in)), std √(1/fan_in); biases 0.
    let l5 = build(ModelKind::LeNet5, &[1, 28, 28], 10, Device::Cpu).unwrap();
    initialise(&l5, InitScheme::CaffeXavier);
    let vars = l5.vs.variables();
    let w = &vars["conv2.weight"]; // fan_in 20·25 = 500
    let bound = (3.0f64 / 500.0).sqrt();
    assert!(w.abs().max().double_value(&[]) <= bound);
    assert!((w.std(true).double_value(&[]) - (1.0f64 / 500.0).sqrt()).abs() < 0.002);
    assert_eq!(vars["fc1.bias"].abs().max().double_value(&[]), 0.0);
}

/// `to_channels_last` changes the layout, not the values: every 4-D weight (also with
/// one input channel) gets channels-last strides and keeps its values, 2-D weights are
/// untouched, and the logits equal the NCHW model's up to float rounding, in training
/// and evaluation mode, for every family with convolutions.
#[test]
fn channels_last_keeps_values_and_logits() {
    let _g = ap_testkit::torch_lock();
    for (kind, input) in [
        (ModelKind::Conv2, [1, 28, 28]),
        (ModelKind::LeNet5, [1, 28, 28]),
        (ModelKind::ResNet20, [3, 32, 32]),
        (ModelKind::ResNet20B, [3, 32, 32]),
        (ModelKind::Vgg11, [3, 32, 32]),
    ] {
        tch::manual_seed(5);
        let nchw = build(kind, &input, 10, Device::Cpu).unwrap();
        tch::manual_seed(5);
        let mut cl = build(kind, &input, 10, Device::Cpu).unwrap();
        cl.to_channels_last();
        assert!(cl.channels_last);
        let (a, b) = (nchw.vs.variables(), cl.vs.variables());
        for (name, t) in &b {
            assert!(t.equal(&a[name]), "{kind}: `{name}` changed");
            assert_eq!(
                is_channels_last(t),
                t.dim() == 4,
                "{kind}: `{name}` {:?}",
                t.stride()
            );
        }
        let x = Tensor::randn(
            [6, input[0], input[1], input[2]],
            (Kind::Float, Device::Cpu),
        );
        for train in [true, false] {
            let (p, q) = (nchw.forward(&x, train), cl.forward(&x, train));
            let scale = p.abs().max().double_value(&[]).max(1.0);
            let diff = (&p - &q).abs().max().double_value(&[]);
            assert!(
                diff <= 1e-4 * scale,
                "{kind} train {train}: logits differ by {diff}"
            );
        }
    }
    let one = channels_last(&Tensor::ones([4, 1, 3, 3], (Kind::Float, Device::Cpu)));
    assert_eq!(one.stride(), vec![9, 1, 3, 1]);
}
