//! Differential tests: every pruning event of the library against an independent
//! PyTorch reference (`tests/reference/prune_ref.py`, written from the papers and the
//! reference code) on the same inputs. Masks must agree exactly; scores, rates and
//! densities to a stated tolerance.
//!
//! Inputs are seeded random floats. Ties, where they occur, follow the shared rule (rank
//! by a stable sort over the layers in parameter order: lower flat index first), and the
//! global magnitude case has deliberate ties to test it. Where a score comes out of a
//! float computation (SNIP, SynFlow, LAMP) the reference also reports the relative gap at
//! each selection boundary, so a mismatch on a numerical near-tie is told apart from a
//! real one.
//!

use std::collections::BTreeMap;

use ap_criteria::{
    ap_select_with, erk_densities, lamp_scores, magnitude_scores, select_by_scores, snip_scores,
    synflow_select, Allocation, ApOptions, ApScore, CandidateSign,
};
use ap_mask::Mask;
use ap_models::{InitScheme, Model, ModelKind::LeNet300_100};
use ap_tensor::NamedParams;
use ap_testkit::tensors::{random_keep, seeded_normal, THREE_LAYERS};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

type Outputs = BTreeMap<String, Tensor>;

/// Writes `inputs`, runs the reference `case` and reads back what it wrote.
fn reference(case: &str, inputs: &[(String, Tensor)], config: Value) -> Outputs {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.safetensors");
    let mut tensors: Vec<(String, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().contiguous()))
        .collect();
    if tensors.is_empty() {
        // The format needs no tensor, but an empty file is one more special case.
        tensors.push(("unused".into(), Tensor::zeros([1], CPU)));
    }
    ap_tensor::save_safetensors(&input, &tensors).expect("writing the inputs");
    let output = dir.path().join("out.safetensors");
    ap_e2e::run_reference(case, &input, &config, &output);
    ap_tensor::load_safetensors(&output, Device::Cpu)
        .expect("reading the reference's output")
        .into_iter()
        .collect()
}

fn get<'a>(out: &'a Outputs, name: &str) -> &'a Tensor {
    out.get(name).unwrap_or_else(|| {
        panic!(
            "reference output has no `{name}`; it has {:?}",
            out.keys().collect::<Vec<_>>()
        )
    })
}

fn f64s(t: &Tensor) -> Vec<f64> {
    ap_tensor::to_f64_vec(t)
}

fn i64s(t: &Tensor) -> Vec<i64> {
    f64s(t).into_iter().map(|v| v as i64).collect()
}

fn scalar(out: &Outputs, name: &str) -> f64 {
    f64s(get(out, name))[0]
}

// Tests run on parallel threads and libtorch's generator and thread count are global:
// every test that seeds, draws, builds a model or sets the thread count holds
// `ap_testkit::torch_lock()` for its whole body (the helpers below do not take it; their
// callers hold it).

/// Seeded N(0, 1) weights, one tensor per `(name, shape)`. The caller holds the torch lock.
fn random_params(layers: &[(&str, &[i64])], seed: i64) -> NamedParams {
    NamedParams::from_entries(seeded_normal(layers, seed))
}

/// A mask with about `pruned` of every layer removed at random (seeded). The caller holds
/// the torch lock.
fn random_mask(params: &NamedParams, pruned: f64, seed: i64) -> Mask {
    Mask::from_entries(random_keep(params.iter(), pruned, seed))
}

/// `prefix.name` → tensor, for the reference's inputs.
fn named(
    prefix: &str,
    entries: impl IntoIterator<Item = (String, Tensor)>,
) -> Vec<(String, Tensor)> {
    entries
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}

fn params_in(prefix: &str, p: &NamedParams) -> Vec<(String, Tensor)> {
    named(
        prefix,
        p.iter().map(|(n, t)| (n.to_string(), t.detach().copy())),
    )
}

fn mask_in(prefix: &str, m: &Mask) -> Vec<(String, Tensor)> {
    named(prefix, m.iter().map(|(n, t)| (n.to_string(), t.copy())))
}

/// Every variable of a model (weights and biases), for the reference's forward pass.
fn model_in(model: &Model) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = model
        .vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("p.{n}"), t.detach().copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn layer_names(p: &NamedParams) -> Vec<String> {
    p.names().map(str::to_string).collect()
}

/// Runs the reference `case` on the weights `p` (as `w.*`) and `mask` (as `m.*`), with
/// `config` and the layer names (`layers`).
fn reference_on(case: &str, p: &NamedParams, mask: &Mask, mut config: Value) -> Outputs {
    let mut inputs = params_in("w", p);
    inputs.extend(mask_in("m", mask));
    config["layers"] = json!(layer_names(p));
    reference(case, &inputs, config)
}

/// The masks agree exactly, layer by layer; a mismatch names the first differing flat
/// positions.
fn assert_same_mask(what: &str, ours: &Mask, refs: &Outputs, prefix: &str) {
    for (name, m) in ours.iter() {
        let theirs = get(refs, &format!("{prefix}mask.{name}"));
        assert_eq!(theirs.size(), m.size(), "{what}: shape of `{name}`");
        let a = m.gt(0.5).flatten(0, -1);
        let b = theirs.gt(0).flatten(0, -1);
        let diff = a.logical_xor(&b).nonzero().flatten(0, -1);
        let n = diff.size()[0];
        if n > 0 {
            let first: Vec<i64> = i64s(&diff.narrow(0, 0, n.min(8)));
            panic!(
                "{what}: masks of `{name}` differ at {n} positions (first: {first:?}); kept: \
                 ours {}, reference {}",
                a.sum(Kind::Int64).int64_value(&[]),
                b.sum(Kind::Int64).int64_value(&[])
            );
        }
    }
}

fn assert_close(what: &str, ours: &[f64], theirs: &[f64], rtol: f64, atol: f64) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= atol + rtol * b.abs(),
            "{what}[{i}]: ours {a}, reference {b} (|Δ| = {:e})",
            (a - b).abs()
        );
    }
}

/// The reference's selections did not fall on a numerical near-tie (see the module doc).
fn assert_margin(what: &str, out: &Outputs, min: f64) {
    let m = scalar(out, "margin");
    assert!(
        m > min,
        "{what}: the inputs put two scores within a relative {m:e} of each other at a \
         selection boundary, so float noise decides the mask; change the seed"
    );
}

fn removing(mask: &Mask, sel: &[Tensor]) -> Mask {
    let mut m = mask.copy();
    m.remove(sel).expect("selection shaped like the mask");
    m
}

/// Three layers of distinct sizes, quantised to multiples of 1/8 so that magnitudes tie
/// within and across layers (and across signs): ties decide which weights go.
fn three_layers(seed: i64) -> NamedParams {
    let p = random_params(THREE_LAYERS, seed);
    for w in p.tensors() {
        let q = (w * 8.0).round() / 8.0;
        tch::no_grad(|| w.shallow_clone().copy_(&q));
    }
    p
}

// --- 1. Global magnitude -----------------------------------------------------------------

/// OpenLTH sparse_global semantics: one ranking of |w| over every kept weight; the
/// selection boundary falls inside a group of tied magnitudes spread over the layers, so
/// the tie rule (position, earlier layer first) is compared too.
#[test]
fn global_magnitude_matches_reference() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let p = three_layers(11);
    let mask = random_mask(&p, 0.3, 12);
    let n = 700;
    let sel = select_by_scores(&magnitude_scores(&p), &mask, n, &Allocation::Global).unwrap();
    let ours = removing(&mask, &sel);
    let out = reference_on("magnitude_global", &p, &mask, json!({ "n": n }));
    assert_eq!(
        scalar(&out, "margin"),
        0.0,
        "the boundary should split a tie"
    );
    assert_same_mask("global magnitude", &ours, &out, "");
    assert_eq!(ours.kept(), mask.kept() - n);
}

// --- 2. Layer-wise magnitude ---------------------------------------------------------------

fn layerwise(p: &NamedParams, mask: &Mask, n: i64, alloc: &Allocation, mults: Value) {
    let sel = select_by_scores(&magnitude_scores(p), mask, n, alloc).unwrap();
    let ours = removing(mask, &sel);
    let config = json!({ "n": n, "multipliers": mults });
    let out = reference_on("magnitude_layerwise", p, mask, config);
    let removed: Vec<i64> = sel
        .iter()
        .map(|s| s.sum(Kind::Int64).int64_value(&[]))
        .collect();
    assert_same_mask(&format!("{alloc:?}"), &ours, &out, "");
    assert_eq!(
        removed,
        i64s(get(&out, "counts")),
        "{alloc:?}: per-layer counts"
    );
}

/// Uniform: floor(rate · kept_l) per layer, rate = n / Σ kept; per-layer with the output
/// layer at half rate (the lottery-ticket paper's LeNet/Conv-k recipe).
#[test]
fn layerwise_magnitude_matches_reference() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let p = random_params(
        &[
            ("fc1.weight", &[60, 50]),
            ("fc2.weight", &[30, 60]),
            ("fc3.weight", &[10, 30]),
        ],
        21,
    );
    let mask = random_mask(&p, 0.25, 22);
    let n = (0.2 * mask.kept() as f64).floor() as i64;
    layerwise(&p, &mask, n, &Allocation::Uniform, json!({}));
    let half = Allocation::PerLayer {
        overrides: [("fc3.weight".to_string(), 0.5)].into(),
    };
    layerwise(&p, &mask, n, &half, json!({ "fc3.weight": 0.5 }));
}

/// Disagreement: the per-layer count floor(n/S · kept_l) is computed in floating point
/// and comes out one short when n · kept_l / S is an integer that f64 misses from below.
/// Minimal input: two dense layers of 26 weights (S = 52), n = 30, Uniform: the rate is
/// 30/52 and each layer should lose exactly 15 (30 · 26 / 52), but (30/52) · 26 =
/// 14.999999999999998 in f64, so each loses 14 and the event removes 28 instead of 30.
#[test]
fn layerwise_counts_are_exact_at_integer_products() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let p = random_params(&[("l0.weight", &[2, 13]), ("l1.weight", &[26])], 23);
    let mask = Mask::dense(&p);
    layerwise(&p, &mask, 30, &Allocation::Uniform, json!({}));
}

// --- 3. LAMP ------------------------------------------------------------------------------

/// LAMP scores w_u² / Σ_{v ≥ u} w_v² over kept weights, then one global ranking.
#[test]
fn lamp_matches_reference() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let p = random_params(THREE_LAYERS, 31);
    let mask = random_mask(&p, 0.3, 32);
    let n = (0.4 * mask.kept() as f64) as i64;
    let scores = lamp_scores(&p, &mask);
    let sel = select_by_scores(&scores, &mask, n, &Allocation::Global).unwrap();
    let ours = removing(&mask, &sel);
    let out = reference_on("lamp", &p, &mask, json!({ "n": n }));
    for (name, s) in p.names().zip(&scores) {
        assert_close(
            &format!("LAMP score of {name}"),
            &f64s(s),
            &f64s(get(&out, &format!("score.{name}"))),
            1e-12,
            1e-15,
        );
    }
    assert_margin("LAMP", &out, 1e-9);
    assert_same_mask("LAMP", &ours, &out, "");
}

// --- 4./5. SNIP and SynFlow on a small LeNet-300-100 ---------------------------------------

/// LeNet-300-100 on 4×4 inputs (16 → 300 → 100 → 10, 35,800 weights): the real model
/// code with a small first layer, built with `seed`; and a mask with about `pruned` of
/// it removed (seeded with `seed + 1`). The caller holds the torch lock.
fn small_lenet(seed: i64, pruned: f64) -> (Model, NamedParams, Mask) {
    tch::manual_seed(seed);
    let m = ap_models::build(LeNet300_100, &[1, 4, 4], 10, Device::Cpu).unwrap();
    let p = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
    let mask = random_mask(&p, pruned, seed + 1);
    (m, p, mask)
}

/// SNIP |g ⊙ w| with the gradient recomputed by PyTorch from the same weights and
/// batches, then a global selection.
#[test]
fn snip_matches_reference() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let (model, p, mask) = small_lenet(41, 0.2);
    tch::manual_seed(43);
    let batches: Vec<(Tensor, Tensor)> = (0..2)
        .map(|_| {
            (
                Tensor::randn([8, 1, 4, 4], CPU),
                Tensor::randint(10, [8], (Kind::Int64, Device::Cpu)),
            )
        })
        .collect();
    let n = (0.8 * mask.kept() as f64) as i64;
    let scores = snip_scores(&model, &p, &mask, &batches);
    let sel = select_by_scores(&scores, &mask, n, &Allocation::Global).unwrap();
    let ours = removing(&mask, &sel);
    let mut inputs = model_in(&model);
    inputs.extend(mask_in("m", &mask));
    for (b, (x, y)) in batches.iter().enumerate() {
        inputs.push((format!("x.{b}"), x.copy()));
        inputs.push((format!("y.{b}"), y.copy()));
    }
    let out = reference(
        "snip",
        &inputs,
        json!({ "layers": layer_names(&p), "n_layers": 3, "batches": batches.len(), "n": n }),
    );
    for (name, s) in p.names().zip(&scores) {
        let theirs = f64s(get(&out, &format!("score.{name}")));
        let top = theirs.iter().fold(0.0f64, |a, &b| a.max(b));
        assert_close(
            &format!("SNIP score of {name}"),
            &f64s(s),
            &theirs,
            1e-4,
            1e-6 * top,
        );
    }
    assert_margin("SNIP", &out, 1e-6);
    assert_same_mask("SNIP", &ours, &out, "");
}

/// Iterative SynFlow, 5 rounds, to 10% of the kept weights.
#[test]
fn synflow_matches_reference() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let (model, p, mask) = small_lenet(51, 0.1);
    let n_remove = (0.9 * mask.kept() as f64) as i64;
    let iterations = 5;
    let sel = synflow_select(&model, &p, &mask, &[1, 4, 4], n_remove, iterations).unwrap();
    let ours = removing(&mask, &sel);
    let mut inputs = model_in(&model);
    inputs.extend(mask_in("m", &mask));
    let out = reference(
        "synflow",
        &inputs,
        json!({
            "layers": layer_names(&p), "n_layers": 3, "input_shape": [1, 4, 4],
            "n_remove": n_remove, "iterations": iterations,
        }),
    );
    assert_margin("SynFlow", &out, 1e-9);
    assert_same_mask("SynFlow", &ours, &out, "");
    assert_eq!(ours.kept(), mask.kept() - n_remove);
}

// --- 6. GMP schedule ----------------------------------------------------------------------

/// Event steps and kept targets total − round(s_t · total), including a target that is
/// exactly half-way (101 · 0.5 = 50.5: rounded away from zero, 50 kept).
#[test]
fn gmp_schedule_matches_reference() {
    use ap_prune::schedule::{gmp_sparsity, gmp_target_kept, is_event_step};
    let cases = [
        (100u64, 1000u64, 100u64, 0.0, 0.9, 266_200i64, 1200u64),
        (0, 10, 3, 0.5, 0.95, 1001, 12),
        (0, 4, 2, 0.0, 0.5, 101, 4),
        (7, 50, 1, 0.2, 0.98, 35_800, 60),
    ];
    for (t0, t_end, every, s_i, s_f, total, t_max) in cases {
        let (mut steps, mut targets, mut sparsity) = (vec![], vec![], vec![]);
        for t in 0..=t_max {
            if is_event_step(t, t0, t_end, every) {
                steps.push(t as i64);
                targets.push(gmp_target_kept(t, t0, t_end, s_i, s_f, total));
                sparsity.push(gmp_sparsity(t, t0, t_end, s_i, s_f));
            }
        }
        let cfg = json!({
            "t0": t0, "t_end": t_end, "every": every, "s_i": s_i, "s_f": s_f,
            "total": total, "t_max": t_max,
        });
        let out = reference("gmp", &[], cfg.clone());
        assert_eq!(steps, i64s(get(&out, "steps")), "event steps for {cfg}");
        assert_eq!(
            targets,
            i64s(get(&out, "targets")),
            "kept targets for {cfg}"
        );
        assert_close(
            &format!("s_t for {cfg}"),
            &sparsity,
            &f64s(get(&out, "sparsity")),
            0.0,
            1e-15,
        );
    }
}

// --- 7. ERK -------------------------------------------------------------------------------

fn shapes_of(model: &str, input: &[i64]) -> Vec<(String, Vec<i64>)> {
    let m = ap_models::build(model.parse().unwrap(), input, 10, Device::Cpu).unwrap();
    let p = NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap();
    p.iter().map(|(n, t)| (n.to_string(), t.size())).collect()
}

/// Layer shapes, overall density, dense layers.
type ErkProblem = (Vec<(String, Vec<i64>)>, f64, Vec<String>);

fn erk_problems(problems: &[ErkProblem]) {
    let cfg: Vec<Value> = problems
        .iter()
        .map(|(s, d, dense)| json!({ "shapes": s, "density": d, "dense": dense }))
        .collect();
    let out = reference("erk", &[], json!({ "problems": cfg }));
    for (i, (shapes, density, dense)) in problems.iter().enumerate() {
        let ours = erk_densities(shapes, *density, dense, false);
        let names: Vec<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
        assert_close(
            &format!("ERK densities of {names:?} at {density} (dense {dense:?})"),
            &ours,
            &f64s(get(&out, &format!("d.{i}"))),
            0.0,
            1e-9,
        );
    }
}

/// RigL's erdos_renyi_kernel densities for LeNet-300-100 and Conv-2 at 5% and 20%
/// (saturated layers made dense and the rest re-normalised).
#[test]
fn erk_matches_reference() {
    let _g = ap_testkit::torch_lock();
    let lenet = shapes_of("lenet300-100", &[1, 28, 28]);
    let conv2 = shapes_of("conv2", &[3, 32, 32]);
    let mut problems = vec![];
    for shapes in [&lenet, &conv2] {
        for d in [0.05, 0.2] {
            problems.push((shapes.clone(), d, vec![]));
        }
    }
    erk_problems(&problems);
}

/// Disagreement: RigL leaves a layer named dense (its custom_sparsity_map, e.g. the first
/// layer) out of the ERK budget — the other layers share `density · Σ their weights` —
/// while `erk_densities` counts its weights towards the budget, so the other layers get
/// less. Minimal input: layers a [10, 10] and b [10, 10], density 0.5, dense [a]: RigL
/// gives b density 0.5, erk_densities gives b 0 (a alone uses the whole budget of 100).
#[test]
fn erk_dense_layers_are_outside_the_budget() {
    let _g = ap_testkit::torch_lock();
    let conv2 = shapes_of("conv2", &[3, 32, 32]);
    let two = vec![
        ("a".to_string(), vec![10, 10]),
        ("b".to_string(), vec![10, 10]),
    ];
    erk_problems(&[
        (two, 0.5, vec!["a".into()]),
        (conv2.clone(), 0.05, vec!["conv1.weight".into()]),
        (conv2, 0.2, vec!["conv1.weight".into()]),
    ]);
}

// --- 8. AP --------------------------------------------------------------------------------

/// A host event (global magnitude) then AP's share: negative kept weights that moved
/// least, its shortfall, and the ablations sign = any and score = magnitude.
#[test]
fn ap_selection_matches_reference() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let w0 = random_params(THREE_LAYERS, 81);
    tch::manual_seed(82);
    let w = NamedParams::from_entries(
        w0.iter()
            .map(|(n, t)| {
                (
                    n.to_string(),
                    t + Tensor::randn(t.size().as_slice(), CPU) * 0.1,
                )
            })
            .collect(),
    );
    let mask = random_mask(&w, 0.3, 83);
    let neg = ApOptions::default();
    let any = ApOptions {
        sign: CandidateSign::Any,
        ..ApOptions::default()
    };
    let mag = ApOptions {
        score: ApScore::Magnitude,
        ..ApOptions::default()
    };
    // (host n, AP n, options, sign, score); the second asks for more than the candidates.
    let runs = [
        (300i64, 100i64, neg, "negative", "movement"),
        (300, 2000, neg, "negative", "movement"),
        (300, 100, any, "any", "movement"),
        (300, 100, mag, "negative", "magnitude"),
    ];
    let mut inputs = params_in("w", &w);
    inputs.extend(params_in("w0", &w0));
    inputs.extend(mask_in("m", &mask));
    let cfg_runs: Vec<Value> = runs
        .iter()
        .map(|(h, a, _, s, sc)| json!({ "n_host": h, "n_ap": a, "sign": s, "score": sc }))
        .collect();
    let out = reference(
        "ap",
        &inputs,
        json!({ "layers": layer_names(&w), "runs": cfg_runs }),
    );
    for (i, (n_host, n_ap, opts, ..)) in runs.iter().enumerate() {
        let host =
            select_by_scores(&magnitude_scores(&w), &mask, *n_host, &Allocation::Global).unwrap();
        let after_host = removing(&mask, &host);
        let s = ap_select_with(&w, &w0, &after_host, *n_ap, opts).unwrap();
        let ours = removing(&after_host, &s.selected);
        let what = format!("AP run {i} ({opts:?}, n = {n_ap})");
        assert_eq!(
            s.removed,
            scalar(&out, &format!("r{i}.removed")) as i64,
            "{what}: removed"
        );
        assert_eq!(
            s.shortfall,
            scalar(&out, &format!("r{i}.shortfall")) as i64,
            "{what}: shortfall"
        );
        assert_same_mask(&what, &ours, &out, &format!("r{i}."));
    }
    assert!(
        scalar(&out, "r1.shortfall") > 0.0,
        "run 1 must exercise the shortfall"
    );
}

// --- 9. DNR -------------------------------------------------------------------------------

/// Static and dynamic DNR per ReLU site and overall, counted by `evaluate`'s probe over
/// uneven batches, against a direct computation on the whole batch.
#[test]
fn dnr_matches_reference() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    tch::manual_seed(91);
    let model = ap_models::build(LeNet300_100, &[1, 8, 8], 10, Device::Cpu).unwrap();
    let x = Tensor::randn([50, 1, 8, 8], CPU);
    let y = Tensor::randint(10, [50], (Kind::Int64, Device::Cpu));
    let r = ap_eval::evaluate(&model, &x, &y, 16).dnr;
    let mut inputs = model_in(&model);
    inputs.push(("x".into(), x.copy()));
    let out = reference("dnr", &inputs, json!({ "n_layers": 3 }));
    let sites: Vec<&str> = r.sites.iter().map(|s| s.site.as_str()).collect();
    assert_eq!(sites, ["fc1.relu", "fc2.relu"]);
    let dynamic: Vec<f64> = r.sites.iter().map(|s| s.dynamic).collect();
    let static_: Vec<f64> = r.sites.iter().map(|s| s.static_).collect();
    assert_close(
        "dynamic DNR per site",
        &dynamic,
        &f64s(get(&out, "dynamic")),
        0.0,
        1e-6,
    );
    assert_close(
        "static DNR per site",
        &static_,
        &f64s(get(&out, "static")),
        0.0,
        1e-6,
    );
    assert_close(
        "dynamic DNR",
        &[r.dynamic],
        &[scalar(&out, "dynamic_all")],
        0.0,
        1e-6,
    );
    assert_close(
        "static DNR",
        &[r.static_],
        &[scalar(&out, "static_all")],
        0.0,
        1e-6,
    );
    assert_eq!(r.samples, scalar(&out, "samples") as i64);
    // a random network has dead and live units, so both rates are informative
    assert!(r.dynamic > 0.1 && r.dynamic < 0.9, "{r:?}");
}

// --- 10. Initialisation -------------------------------------------------------------------

fn max_abs_and_std(t: &Tensor) -> (f64, f64) {
    let t = t.detach().to_kind(Kind::Double);
    (
        t.abs().max().double_value(&[]),
        t.std(true).double_value(&[]),
    )
}

fn within(what: &str, value: f64, target: f64, rel: f64) {
    assert!(
        (value - target).abs() <= rel * target,
        "{what}: {value} is not within {}% of {target}",
        rel * 100.0
    );
}

/// `t`'s largest magnitude is at most `bound` and above `near · bound` (the draws reach
/// close to the bound); returns `t`'s std.
fn bounded(what: &str, t: &Tensor, bound: f64, near: f64) -> f64 {
    let (max, std) = max_abs_and_std(t);
    assert!(
        max <= bound && max > near * bound,
        "{what}: max {max}, bound {bound}"
    );
    std
}

/// Our weights' `std` is within 3% of the `formula` and of PyTorch's draws' std.
fn std_within(what: &str, std: f64, formula: f64, pytorch: f64) {
    within(&format!("{what} weight std"), std, formula, 0.03);
    within(
        &format!("{what} weight std vs PyTorch's"),
        std,
        pytorch,
        0.03,
    );
}

/// A layer of a registered model, re-initialised with `scheme` (seeded).
fn initialised(
    model: &str,
    input: &[i64],
    layer: &str,
    scheme: InitScheme,
    seed: i64,
) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let m = ap_models::build(model.parse().unwrap(), input, 10, Device::Cpu).unwrap();
    ap_models::initialise(&m, scheme);
    let vars = m.vs.variables();
    (
        vars[&format!("{layer}.weight")].detach().copy(),
        vars[&format!("{layer}.bias")].detach().copy(),
    )
}

/// PyTorch's nn.Linear(300, 100) / nn.Conv2d(64, 64, 3) defaults (U(±1/√fan_in) for
/// weights and biases), Xavier normal and Kaiming normal: the bound, the maximum and the
/// std of our draws against the formula and against PyTorch's own draws.
#[test]
fn init_matches_pytorch() {
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    let out = reference("init", &[], json!({ "seed": 101 }));
    // (reference name, model, input, layer): LeNet's fc2 is Linear(300, 100), Conv-2's
    // conv2 is Conv2d(64, 64, 3).
    let layers = [
        ("linear", "lenet300-100", &[1i64, 28, 28][..], "fc2"),
        ("conv", "conv2", &[3, 32, 32][..], "conv2"),
    ];
    for (name, model, input, layer) in layers {
        let s = |k: &str| scalar(&out, &format!("{name}.{k}"));
        let bound = s("bound");
        let uniform_std = bound / 3f64.sqrt();
        // the reference's own draw follows the formula (sanity of the comparison)
        assert!(s("pytorch.weight.max") <= bound && s("pytorch.weight.max") > 0.97 * bound);
        within(
            &format!("PyTorch {name} std"),
            s("pytorch.weight.std"),
            uniform_std,
            0.03,
        );

        let (w, b) = initialised(model, input, layer, InitScheme::Pytorch, 102);
        let std = bounded(&format!("{name} (Pytorch): |w|"), &w, bound, 0.97);
        let pytorch_std = s("pytorch.weight.std");
        std_within(&format!("{name} (Pytorch)"), std, uniform_std, pytorch_std);
        // biases: 64–100 values, so looser statistics (std error ≈ 5%)
        let bias_bound = s("bias_bound");
        let bstd = bounded(&format!("{name} (Pytorch): |b|"), &b, bias_bound, 0.8);
        within(
            &format!("{name} (Pytorch) bias std"),
            bstd,
            bias_bound / 3f64.sqrt(),
            0.2,
        );

        for (scheme, key) in [
            (InitScheme::XavierNormal, "xavier"),
            (InitScheme::KaimingNormal, "kaiming"),
        ] {
            let formula = s(&format!("{key}_std"));
            within(
                &format!("PyTorch {name} {key} std"),
                s(&format!("{key}.weight.std")),
                formula,
                0.03,
            );
            let (w, b) = initialised(model, input, layer, scheme, 103);
            let (_, std) = max_abs_and_std(&w);
            let theirs = s(&format!("{key}.weight.std"));
            std_within(&format!("{name} ({scheme:?})"), std, formula, theirs);
            assert_eq!(
                b.abs().max().double_value(&[]),
                0.0,
                "{name} ({scheme:?}): biases start at 0"
            );
        }
    }
}

// --- The drop-and-grow reference, on a hand-checked example ----------------------------------

/// The reference's `drop_and_grow` (for GraNet and RigL cases) on an input small enough
/// to check by hand: 3 active of 5, fraction 0.5 → k = 2 (ceil) or 1 (floor).
/// floor: drop -0.1 (smallest |w|), grow by |g| among {1, 3, 4}: position 1 (|g| = 7), so
/// the dropped weight comes back with its value. ceil: drop -0.1 and 0.3, grow 1 and 4
/// (|g| 7 and 3); position 4 was inactive before, so it starts at 0. The dense layer is
/// left alone.
#[test]
fn drop_and_grow_reference_on_a_hand_example() {
    let w = Tensor::from_slice(&[0.5f32, -0.1, 0.3, 0.0, 0.0]);
    let g = Tensor::from_slice(&[0.0f32, 7.0, 0.0, 1.0, 3.0]);
    let m = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 0.0, 0.0]);
    let dense = Tensor::from_slice(&[0.0f32, 2.0]);
    let inputs = vec![
        ("w.l".to_string(), w),
        ("g.l".to_string(), g),
        ("m.l".to_string(), m),
        ("w.d".to_string(), dense.copy()),
        ("g.d".to_string(), Tensor::from_slice(&[5.0f32, 0.0])),
        ("m.d".to_string(), Tensor::from_slice(&[0.0f32, 1.0])),
    ];
    for (rounding, mask, weights, k) in [
        ("floor", [1, 1, 1, 0, 0], [0.5, -0.1, 0.3, 0.0, 0.0], 1),
        ("ceil", [1, 1, 0, 0, 1], [0.5, -0.1, 0.0, 0.0, 0.0], 2),
    ] {
        let out = reference(
            "drop_and_grow",
            &inputs,
            json!({ "layers": ["l", "d"], "fraction": 0.5, "rounding": rounding, "dense_layers": ["d"] }),
        );
        assert_eq!(i64s(get(&out, "mask.l")), mask, "{rounding}");
        assert_close(rounding, &f64s(get(&out, "w.l")), &weights, 0.0, 1e-7);
        assert_eq!(i64s(get(&out, "counts")), [k, 0], "{rounding}");
        assert_eq!(
            i64s(get(&out, "mask.d")),
            [0, 1],
            "{rounding}: dense layer untouched"
        );
        assert_close(rounding, &f64s(get(&out, "w.d")), &[0.0, 2.0], 0.0, 0.0);
    }
}

/// GraNet's and RigL's drop-and-grow (`ap_prune::drop_and_grow`) against the reference's
/// `truncate_weights` semantics on the same weights, gradients and mask: the same new
/// mask and the same weights after the step (re-selected weights keep their value, new
/// connections start at 0). GraNet: ceil, every layer; RigL: floor, the output layer dense.
#[test]
fn drop_and_grow_matches_reference() {
    let _g = ap_testkit::torch_lock();
    let layers: [(&str, &[i64]); 3] = [
        ("fc1.weight", &[40, 30]),
        ("fc2.weight", &[20, 40]),
        ("fc3.weight", &[5, 20]),
    ];
    for (seed, rounding, fraction, dense, pruned) in [
        (31, ap_prune::DropRounding::Ceil, 0.5, vec![], 0.0),
        (32, ap_prune::DropRounding::Ceil, 0.37, vec![], 0.6),
        (
            33,
            ap_prune::DropRounding::Floor,
            0.3,
            vec!["fc3.weight".to_string()],
            0.8,
        ),
    ] {
        let values = random_params(&layers, seed);
        let grads = random_params(&layers, seed + 100);
        let mut mask = random_mask(&values, pruned, seed + 200);
        if !dense.is_empty() {
            // A dense layer is dense.
            mask = Mask::from_entries(
                mask.iter()
                    .map(|(n, m)| {
                        (
                            n.to_string(),
                            if dense.iter().any(|d| d == n) {
                                m.ones_like()
                            } else {
                                m.shallow_clone()
                            },
                        )
                    })
                    .collect(),
            );
        }
        // Leaf weights whose .grad() is `grads`, masked as after any training step.
        let params = NamedParams::from_entries(
            values
                .iter()
                .map(|(n, w)| (n.to_string(), w.copy().set_requires_grad(true)))
                .collect(),
        );
        mask.apply(&params).unwrap();
        let loss = params
            .tensors()
            .iter()
            .zip(grads.tensors())
            .map(|(w, g)| (*w * g).sum(Kind::Float))
            .fold(Tensor::zeros([], CPU), |a, b| a + b);
        loss.backward();
        let mut inputs = vec![];
        for ((n, w), ((_, g), (_, m))) in params.iter().zip(grads.iter().zip(mask.iter())) {
            inputs.push((format!("w.{n}"), w.detach().copy()));
            inputs.push((format!("g.{n}"), g.copy()));
            inputs.push((format!("m.{n}"), m.copy()));
        }
        let names = layer_names(&params);
        let out = reference(
            "drop_and_grow",
            &inputs,
            json!({
                "layers": names,
                "fraction": fraction,
                "rounding": if rounding == ap_prune::DropRounding::Ceil { "ceil" } else { "floor" },
                "dense_layers": dense,
            }),
        );
        let spec = ap_prune::DropGrow {
            fraction,
            rounding,
            dense_layers: &dense,
        };
        let report =
            ap_prune::drop_and_grow(&params, &mut mask, &params.snapshot(), &spec, None).unwrap();
        let counts = i64s(get(&out, "counts"));
        assert_eq!(
            report.host_dropped,
            counts.iter().sum::<i64>(),
            "seed {seed}: drop count"
        );
        assert_eq!(report.regrown, report.host_dropped);
        for (n, w) in params.iter() {
            assert_eq!(
                i64s(&mask.get(n).unwrap().flatten(0, -1)),
                i64s(get(&out, &format!("mask.{n}"))),
                "seed {seed}: mask of {n}"
            );
            assert_close(
                &format!("seed {seed}: weights of {n}"),
                &f64s(&w.detach().flatten(0, -1)),
                &f64s(get(&out, &format!("w.{n}"))),
                0.0,
                0.0,
            );
        }
    }
}

// --- BiP: one bi-level iteration ------------------------------------------------------------

/// Two BiP iterations (lower SGD step on batch A, upper score step on batch B, new mask)
/// on a small LeNet-300-100 (4 → 300 → 100 → 10) against the PyTorch reference
/// (`bip_step`: autograd through a straight-through global top-k). The upper rate and the
/// implicit-gradient coefficient are exaggerated (β = 100, λ = 200) so that the mask moves
/// and the implicit term changes the score update by a visible fraction; the score
/// momentum and weight decay act in the second iteration. θ, s and the biases must agree
/// to float precision, the masks exactly.
#[test]
fn bip_iterations_match_reference() {
    use ap_prune::bip::{bip_iteration, BipState, UpperStep};
    use ap_train::{Optimizer, OptimizerSpec};
    let _g = ap_testkit::torch_lock();
    tch::set_num_threads(1);
    tch::manual_seed(61);
    let model = ap_models::build(LeNet300_100, &[1, 2, 2], 10, Device::Cpu).unwrap();
    let p = NamedParams::from_var_store(&model.vs, &model.net.prunable()).unwrap();
    let mut state = BipState::new(&p, 0.2);
    let inputs_before = model_in(&model);
    let scores_before: Vec<Tensor> = state.scores.iter().map(Tensor::copy).collect();
    let theta_before = state.theta.snapshot();
    let mask = Mask::dense(&p);
    state.set_mask(&p, &mask).unwrap();
    let (lower_lr, upper) = (
        0.1,
        UpperStep {
            lr: 100.0,
            implicit_lr: 200.0,
            momentum: 0.9,
            weight_decay: 1e-2,
        },
    );
    let sgd = OptimizerSpec::Sgd {
        lr: lower_lr,
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    };
    let mut opt = Optimizer::new(sgd, &model.vs, Some(&mask));
    let batch = || {
        (
            Tensor::randn([16, 1, 2, 2], CPU),
            Tensor::randint(10, [16], (Kind::Int64, Device::Cpu)),
        )
    };
    let iterations = 2;
    let batches: Vec<_> = (0..iterations).map(|_| (batch(), batch())).collect();
    let mask_before = mask.copy();
    for (a, b) in &batches {
        bip_iteration(
            &model,
            &p,
            &mask,
            &mut state,
            &mut opt,
            (&a.0, &a.1),
            (&b.0, &b.1),
            lower_lr,
            upper,
        )
        .unwrap();
    }
    let moved: i64 = mask
        .tensors()
        .iter()
        .zip(mask_before.tensors())
        .map(|(a, b)| a.ne_tensor(b).sum(Kind::Int64).int64_value(&[]))
        .sum();
    assert!(
        moved > 0,
        "the mask did not move: the test would say nothing"
    );
    // The reference starts from θ (the weights before masking), the same scores and biases.
    let mut inputs = inputs_before;
    inputs.extend(named(
        "s",
        p.names()
            .map(str::to_string)
            .zip(scores_before.iter().map(Tensor::copy)),
    ));
    for (i, ((xa, ya), (xb, yb))) in batches.iter().enumerate() {
        inputs.push((format!("xa.{i}"), xa.copy()));
        inputs.push((format!("ya.{i}"), ya.copy()));
        inputs.push((format!("xb.{i}"), xb.copy()));
        inputs.push((format!("yb.{i}"), yb.copy()));
    }
    let out = reference(
        "bip_step",
        &inputs,
        json!({
            "layers": layer_names(&p), "n_layers": 3, "keep": state.keep,
            "iterations": iterations, "lower_lr": lower_lr, "upper_lr": upper.lr,
            "implicit_lr": upper.implicit_lr, "momentum": upper.momentum,
            "weight_decay": upper.weight_decay,
        }),
    );
    assert_margin("BiP top-k", &out, 1e-5);
    // Updates (new − old), so the tolerance bites on what the step changed.
    let delta_close = |what: &str, new: &Tensor, old: &Tensor, theirs: &Tensor| {
        let ours = f64s(&(new - old));
        let ref_delta = f64s(&(theirs - old));
        let top = ref_delta.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
        assert!(top > 0.0, "{what}: nothing moved");
        assert_close(what, &ours, &ref_delta, 1e-4, 1e-5 * top);
    };
    for (i, name) in p.names().enumerate() {
        delta_close(
            &format!("s of {name}"),
            &state.scores[i],
            &scores_before[i],
            get(&out, &format!("s.{name}")),
        );
        delta_close(
            &format!("θ of {name}"),
            state.theta.get(name).unwrap(),
            theta_before.get(name).unwrap(),
            get(&out, &format!("theta.{name}")),
        );
    }
    for (name, t) in model.vs.variables() {
        if name.ends_with(".bias") {
            let theirs = get(&out, &format!("p.{name}"));
            assert_close(&name, &f64s(&t.detach()), &f64s(theirs), 1e-5, 1e-7);
        }
    }
    assert_same_mask("BiP", &mask, &out, "");
}
