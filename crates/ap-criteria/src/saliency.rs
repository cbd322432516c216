//! Criteria that run the model: SNIP (gradient × weight on labelled batches) and
//! SynFlow (synaptic flow through the absolute-valued network, data-free).
//!
//! Both differentiate with `Tensor::run_backward` (libtorch's `autograd.grad`), which
//! returns the gradients instead of accumulating them into the parameters' `.grad`, and
//! both change the parameters only through a guard that puts the original storage back
//! when dropped (also on a panic), so the weights afterwards are bit-for-bit the same
//! tensors they were before.

use ap_mask::Mask;
use ap_models::Model;
use ap_tensor::{select_smallest, NamedParams, SelectError};
use tch::{Kind, Reduction, Tensor};

/// Temporarily replaced parameter data: `set_data` swaps a variable's storage (every
/// shallow clone of the variable sees the swap, the optimizer and the model layers
/// included); dropping the guard swaps the original storage back.
struct SwappedData {
    saved: Vec<(Tensor, Tensor)>,
}

impl SwappedData {
    fn new() -> Self {
        SwappedData { saved: vec![] }
    }

    /// Gives `var` the data `new` until the guard is dropped.
    fn swap(&mut self, var: &Tensor, new: &Tensor) -> Result<(), SelectError> {
        let mut handle = var.shallow_clone();
        // `detach` aliases the current storage without copying it.
        let original = var.detach();
        handle
            .f_set_data(new)
            .map_err(|e| SelectError::ShapeMismatch(format!("swapping parameter data: {e}")))?;
        self.saved.push((handle, original));
        Ok(())
    }
}

impl Drop for SwappedData {
    fn drop(&mut self) {
        for (handle, original) in self.saved.iter_mut().rev() {
            // Same kind, device and shape as before: this cannot fail.
            let _ = handle.f_set_data(original);
        }
    }
}

fn check_names(params: &NamedParams, mask: &Mask) -> Result<(), SelectError> {
    let same = params.len() == mask.tensors().len()
        && params.names().zip(mask.iter()).all(|(a, (b, _))| a == b);
    if same {
        Ok(())
    } else {
        Err(SelectError::ShapeMismatch(format!(
            "parameters [{}] vs mask [{}]",
            params.names().collect::<Vec<_>>().join(", "),
            mask.iter().map(|(n, _)| n).collect::<Vec<_>>().join(", ")
        )))
    }
}

/// d(root)/d(param) for each parameter; zeros for a parameter the root does not reach.
fn gradients(root: &Tensor, params: &NamedParams) -> Result<Vec<Tensor>, SelectError> {
    let inputs = params.tensors();
    let grads = Tensor::f_run_backward(&[root], &inputs, false, false)
        .map_err(|e| SelectError::ShapeMismatch(format!("differentiating the model: {e}")))?;
    Ok(grads
        .into_iter()
        .zip(&inputs)
        .map(|(g, w)| {
            if g.defined() {
                g
            } else {
                w.detach().zeros_like()
            }
        })
        .collect())
}

fn zero_grads(model: &Model) {
    for mut v in model.vs.trainable_variables() {
        v.zero_grad();
    }
}

/// SNIP scores (Lee et al. 2019): `|g ⊙ w|`, g the gradient of the cross-entropy
/// (`cross_entropy_for_logits`, a batch mean) summed over `batches`, at the masked
/// weights (pruned positions are held at 0 while scoring, whatever their stored value),
/// with the model in train mode. Pruned positions score 0. Scores have the parameters'
/// kind.
///
/// Weights are restored exactly and every trainable variable's gradient is zeroed
/// afterwards. Train mode updates batch-norm running statistics, as in the reference
/// implementation. `params` must be views of `model.vs` (`NamedParams::from_var_store`)
/// and the batches on the model's device.
///
/// # Panics
/// When `params`/`mask` do not match or the model rejects a batch (programming errors);
/// [`try_snip_scores`] returns them as errors.
pub fn snip_scores(
    model: &Model,
    params: &NamedParams,
    mask: &Mask,
    batches: &[(Tensor, Tensor)],
) -> Vec<Tensor> {
    try_snip_scores(model, params, mask, batches).unwrap_or_else(|e| panic!("SNIP: {e}"))
}

/// [`snip_scores`], with mismatches and libtorch errors returned.
pub fn try_snip_scores(
    model: &Model,
    params: &NamedParams,
    mask: &Mask,
    batches: &[(Tensor, Tensor)],
) -> Result<Vec<Tensor>, SelectError> {
    check_names(params, mask)?;
    let mut guard = SwappedData::new();
    let masked: Vec<Tensor> = tch::no_grad(|| {
        params
            .tensors()
            .iter()
            .zip(mask.tensors())
            .map(|(w, m)| w.detach() * m.to_kind(w.kind()))
            .collect()
    });
    for (w, m) in params.tensors().iter().zip(&masked) {
        guard.swap(w, m)?;
    }
    let mut sum: Vec<Tensor> = masked.iter().map(|w| w.zeros_like()).collect();
    for (x, y) in batches {
        // `cross_entropy_for_logits`, with libtorch errors returned instead of panicking.
        let loss = model
            .forward(x, true)
            .f_log_softmax(-1, Kind::Float)
            .and_then(|l| l.f_nll_loss::<Tensor>(y, None, Reduction::Mean, -100))
            .map_err(|e| SelectError::ShapeMismatch(format!("SNIP loss: {e}")))?;
        for (s, g) in sum.iter_mut().zip(gradients(&loss, params)?) {
            *s += g;
        }
    }
    drop(guard);
    zero_grads(model);
    Ok(sum
        .iter()
        .zip(&masked)
        .map(|(g, w)| (g * w).abs())
        .collect())
}

/// SynFlow scores (Tanaka et al. 2020), data-free, kind `Double`.
///
/// Every floating-point variable of `model.vs` (weights, biases, norm parameters and
/// running statistics) is replaced for the duration by its absolute value in double
/// precision, masked weights held at 0; an all-ones input of shape `[1, ...input_shape]`
/// goes through the model in eval mode, R = Σ output, and the score is `|∂R/∂w ⊙ w|`.
/// Double precision because R is a product of per-layer gains and overflows `f32` in
/// deep networks (VGG/ResNet at init); scores stay finite up to ~1e308. The original
/// storage of every variable is put back afterwards (bit-exact, even on a panic) and
/// gradients are zeroed. Pruned positions score 0.
///
/// # Panics
/// When `params`/`mask` do not match or the model rejects the input (programming
/// errors); [`try_synflow_scores`] returns them as errors.
pub fn synflow_scores(
    model: &Model,
    params: &NamedParams,
    mask: &Mask,
    input_shape: &[i64],
) -> Vec<Tensor> {
    try_synflow_scores(model, params, mask, input_shape).unwrap_or_else(|e| panic!("SynFlow: {e}"))
}

/// [`synflow_scores`], with mismatches and libtorch errors returned.
pub fn try_synflow_scores(
    model: &Model,
    params: &NamedParams,
    mask: &Mask,
    input_shape: &[i64],
) -> Result<Vec<Tensor>, SelectError> {
    check_names(params, mask)?;
    let Some(first) = params.tensors().first().map(|t| t.device()) else {
        return Ok(vec![]);
    };
    let mut vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, _) in params.iter() {
        if !vars.iter().any(|(n, _)| n == name) {
            return Err(SelectError::ShapeMismatch(format!(
                "parameter `{name}` is not a variable of the model"
            )));
        }
    }
    let mut guard = SwappedData::new();
    for (name, v) in vars.iter().filter(|(_, v)| v.is_floating_point()) {
        let a = tch::no_grad(|| {
            let a = v.detach().to_kind(Kind::Double).abs();
            match mask.get(name) {
                Some(m) => a * m.to_kind(Kind::Double),
                None => a,
            }
        });
        guard.swap(v, &a)?;
    }
    let mut shape = vec![1];
    shape.extend_from_slice(input_shape);
    let x = Tensor::ones(shape.as_slice(), (Kind::Double, first));
    let r = model
        .forward(&x, false)
        .f_sum(Kind::Double)
        .map_err(|e| SelectError::ShapeMismatch(format!("SynFlow forward: {e}")))?;
    let grads = gradients(&r, params)?;
    // Scores against |w| ⊙ m, still swapped in (so the kind is Double).
    let scores = tch::no_grad(|| {
        grads
            .iter()
            .zip(params.tensors())
            .map(|(g, w)| (g * w.detach()).abs())
            .collect()
    });
    drop(guard);
    zero_grads(model);
    Ok(scores)
}

/// Iterative SynFlow (Tanaka et al. 2020): chooses exactly `n_remove` kept weights to
/// remove (boolean tensors in mask order, true = remove).
///
/// Over `iterations` steps (0 is taken as 1) the kept count follows the exponential
/// schedule `kept_k = round(S · (target/S)^(k/iterations))`, S = kept now, target =
/// S − n_remove (the last step lands on target exactly); step k re-scores with the mask
/// so far and removes the `kept_{k−1} − kept_k` smallest scores globally. Re-scoring is
/// what avoids layer collapse: a thinning layer's remaining weights carry more of the
/// flow and score higher. The caller's `mask` is not changed (the steps work on a copy)
/// and the model's weights are restored.
pub fn synflow_select(
    model: &Model,
    params: &NamedParams,
    mask: &Mask,
    input_shape: &[i64],
    n_remove: i64,
    iterations: usize,
) -> Result<Vec<Tensor>, SelectError> {
    check_names(params, mask)?;
    let start = mask.kept();
    if n_remove < 0 || n_remove > start {
        return Err(SelectError::TooFew {
            requested: n_remove,
            eligible: start,
        });
    }
    let mut work = mask.copy();
    let target = start - n_remove;
    let steps = iterations.max(1);
    let mut prev = start;
    for k in 1..=steps {
        let kept = if k == steps || n_remove == 0 {
            target
        } else {
            let frac = (target as f64 / start as f64).powf(k as f64 / steps as f64);
            ((start as f64 * frac).round() as i64).clamp(target, prev)
        };
        let remove = prev - kept;
        if remove == 0 {
            continue;
        }
        let scores = try_synflow_scores(model, params, &work, input_shape)?;
        let sel = select_smallest(&scores.iter().collect::<Vec<_>>(), &work.tensors(), remove)?;
        work.remove(&sel)
            .map_err(|e| SelectError::ShapeMismatch(e.to_string()))?;
        prev = kept;
    }
    Ok(mask
        .tensors()
        .iter()
        .zip(work.tensors())
        .map(|(m, w)| m.gt(0.5).logical_and(&w.le(0.5)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ap_models::{ActivationProbe, Network};
    use tch::{nn, nn::VarStore, Device};

    /// `fc1 → relu → fc2 → …` with or without biases, for hand-checked gradients.
    #[derive(Debug)]
    struct Mlp {
        layers: Vec<nn::Linear>,
    }

    impl Network for Mlp {
        fn forward(&self, xs: &Tensor, _train: bool, _probe: &mut dyn ActivationProbe) -> Tensor {
            let mut h = xs.flatten(1, -1);
            for (i, l) in self.layers.iter().enumerate() {
                h = h.apply(l);
                if i + 1 < self.layers.len() {
                    h = h.relu();
                }
            }
            h
        }
        fn prunable(&self) -> Vec<String> {
            (1..=self.layers.len())
                .map(|i| format!("fc{i}.weight"))
                .collect()
        }
        fn relu_sites(&self) -> Vec<(String, i64)> {
            vec![]
        }
    }

    fn mlp(dims: &[i64], bias: bool, seed: i64) -> Model {
        tch::manual_seed(seed);
        let vs = VarStore::new(Device::Cpu);
        let cfg = nn::LinearConfig {
            bias,
            ..Default::default()
        };
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(vs.root() / format!("fc{}", i + 1), w[0], w[1], cfg))
            .collect();
        Model {
            vs,
            net: Box::new(Mlp { layers }),
            kind: None,
            channels_last: false,
        }
    }

    fn lenet(seed: i64) -> (Model, NamedParams) {
        tch::manual_seed(seed);
        let kind = ap_models::ModelKind::LeNet300_100;
        let m = ap_models::build(kind, &[1, 28, 28], 10, Device::Cpu).unwrap();
        let p = params_of(&m);
        (m, p)
    }

    fn params_of(m: &Model) -> NamedParams {
        NamedParams::from_var_store(&m.vs, &m.net.prunable()).unwrap()
    }

    fn host(t: &Tensor) -> Vec<f64> {
        ap_tensor::to_f64_vec(t)
    }

    /// Every variable's value and storage, to check a restore is bit-exact.
    fn fingerprint(m: &Model) -> Vec<(String, Tensor, usize)> {
        let mut v: Vec<_> =
            m.vs.variables()
                .into_iter()
                .map(|(n, t)| {
                    let ptr = t.data_ptr() as usize;
                    (n, t.detach().copy(), ptr)
                })
                .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn assert_restored(m: &Model, before: &[(String, Tensor, usize)]) {
        let now = fingerprint(m);
        assert_eq!(now.len(), before.len());
        for ((n, a, pa), (_, b, pb)) in now.iter().zip(before) {
            assert_eq!(a.kind(), b.kind(), "{n}");
            // equal() compares values exactly, signs included (−0.0 aside)
            assert!(a.equal(b), "{n} changed");
            assert!(a.signbit().equal(&b.signbit()), "{n} signs changed");
            assert_eq!(pa, pb, "{n} storage replaced");
        }
    }

    fn assert_grads_zero(m: &Model) {
        for v in m.vs.trainable_variables() {
            let g = v.grad();
            if g.defined() {
                assert_eq!(g.abs().sum(Kind::Double).double_value(&[]), 0.0);
            }
        }
    }

    /// Puts a nonzero gradient on every variable (so "zeroed after" is tested).
    fn dirty_grads(m: &Model, input: &[i64]) {
        let mut shape = vec![2];
        shape.extend_from_slice(input);
        m.forward(
            &Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)),
            true,
        )
        .square()
        .sum(Kind::Float)
        .backward();
    }

    #[test]
    fn snip_matches_hand_computed_gradient() {
        let _g = ap_testkit::torch_lock();
        let m = mlp(&[3, 2], true, 0);
        let p = params_of(&m);
        let mut mask = Mask::dense(&p);
        // prune w[1][2] but leave its stored value nonzero: scoring must hold it at 0
        mask.remove(&[Tensor::from_slice(&[false, false, false, false, false, true]).view([2, 3])])
            .unwrap();
        dirty_grads(&m, &[3]);
        let before = fingerprint(&m);
        let batches = vec![
            (
                Tensor::from_slice(&[1.0f32, -2.0, 0.5, 0.0, 1.0, 3.0]).view([2, 3]),
                Tensor::from_slice(&[0i64, 1]),
            ),
            (
                Tensor::from_slice(&[2.0f32, 1.0, -1.0]).view([1, 3]),
                Tensor::from_slice(&[1i64]),
            ),
        ];
        let scores = snip_scores(&m, &p, &mask, &batches);
        assert_restored(&m, &before);
        assert_grads_zero(&m);

        let mut w = host(p.get("fc1.weight").unwrap());
        w[5] = 0.0;
        let b = host(&m.vs.variables()["fc1.bias"]);
        let mut g = [0.0f64; 6];
        for (x, y) in &batches {
            let xs = host(x);
            let ys = host(y);
            let n = ys.len();
            for s in 0..n {
                let xi = &xs[3 * s..3 * s + 3];
                let z: Vec<f64> = (0..2)
                    .map(|o| b[o] + (0..3).map(|i| w[3 * o + i] * xi[i]).sum::<f64>())
                    .collect();
                let mx = z[0].max(z[1]);
                let e: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
                let se: f64 = e.iter().sum();
                for o in 0..2 {
                    let d = e[o] / se - if ys[s] as usize == o { 1.0 } else { 0.0 };
                    for i in 0..3 {
                        g[3 * o + i] += d * xi[i] / n as f64;
                    }
                }
            }
        }
        let got = host(&scores[0]);
        for k in 0..6 {
            let want = (g[k] * w[k]).abs();
            assert!((got[k] - want).abs() < 1e-5, "{k}: {got:?} vs {want}");
        }
        assert_eq!(got[5], 0.0);
    }

    #[test]
    fn synflow_matches_hand_computed_flow() {
        let _g = ap_testkit::torch_lock();
        let m = mlp(&[3, 4, 2], false, 1);
        let p = params_of(&m);
        let mut mask = Mask::dense(&p);
        let mut pruned = vec![false; 12];
        pruned[4] = true;
        mask.remove(&[
            Tensor::from_slice(&pruned).view([4, 3]),
            Tensor::zeros([2, 4], (Kind::Bool, Device::Cpu)),
        ])
        .unwrap();
        let s = synflow_scores(&m, &p, &mask, &[3]);
        let w1: Vec<f64> = host(p.get("fc1.weight").unwrap())
            .iter()
            .enumerate()
            .map(|(k, v)| if pruned[k] { 0.0 } else { v.abs() })
            .collect();
        let w2: Vec<f64> = host(p.get("fc2.weight").unwrap())
            .iter()
            .map(|v| v.abs())
            .collect();
        // R = 1ᵀ|W2||W1|1: dR/dW1[i][j] = Σ_k |W2[k][i]|, dR/dW2[k][i] = Σ_j |W1[i][j]|
        let (s1, s2) = (host(&s[0]), host(&s[1]));
        for i in 0..4 {
            let col: f64 = (0..2).map(|k| w2[4 * k + i]).sum();
            let row: f64 = (0..3).map(|j| w1[3 * i + j]).sum();
            for j in 0..3 {
                assert!((s1[3 * i + j] - w1[3 * i + j] * col).abs() < 1e-6);
            }
            for k in 0..2 {
                assert!((s2[4 * k + i] - w2[4 * k + i] * row).abs() < 1e-6);
            }
        }
        assert_eq!(s1[4], 0.0);
        assert_eq!(s[0].kind(), Kind::Double);
    }

    #[test]
    fn synflow_is_data_free_and_restores_everything() {
        let _g = ap_testkit::torch_lock();
        let (m, p) = lenet(3);
        let mask = Mask::dense(&p);
        dirty_grads(&m, &[1, 28, 28]);
        let before = fingerprint(&m);
        let a = synflow_scores(&m, &p, &mask, &[1, 28, 28]);
        assert_restored(&m, &before);
        assert_grads_zero(&m);
        // a data batch through the model (train mode) in between changes nothing
        let _ = m.forward(
            &Tensor::randn([8, 1, 28, 28], (Kind::Float, Device::Cpu)),
            true,
        );
        let b = synflow_scores(&m, &p, &mask, &[1, 28, 28]);
        for (x, y) in a.iter().zip(&b) {
            assert!(x.equal(y));
            assert!(x.isfinite().all().int64_value(&[]) == 1);
        }
        assert_restored(&m, &before);
    }

    #[test]
    fn weights_are_restored_when_the_model_panics() {
        let _g = ap_testkit::torch_lock();
        let (m, p) = lenet(4);
        let mask = Mask::dense(&p);
        let before = fingerprint(&m);
        // a wrong input shape makes the first linear layer panic inside tch
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            try_synflow_scores(&m, &p, &mask, &[1, 5, 5])
        }));
        assert!(r.is_err() || r.unwrap().is_err());
        assert_restored(&m, &before);
    }

    #[test]
    fn iterative_synflow_avoids_layer_collapse() {
        let _g = ap_testkit::torch_lock();
        let (m, p) = lenet(5);
        let mask = Mask::dense(&p);
        let before = fingerprint(&m);
        let total = mask.kept();
        let n = total - (0.01 * total as f64).round() as i64;
        let sel = synflow_select(&m, &p, &mask, &[1, 28, 28], n, 20).unwrap();
        assert_restored(&m, &before);
        assert_eq!(mask.kept(), total, "the caller's mask is untouched");
        let removed: i64 = sel
            .iter()
            .map(|t| t.sum(Kind::Int64).int64_value(&[]))
            .sum();
        assert_eq!(removed, n);
        let mut after = mask.copy();
        after.remove(&sel).unwrap();
        assert!(after.is_subset_of(&mask));
        for l in after.report().layers {
            assert!(l.kept > 0, "layer {} collapsed", l.name);
        }
        // asking for more than is kept is an error, not a panic
        assert!(matches!(
            synflow_select(&m, &p, &after, &[1, 28, 28], after.kept() + 1, 3),
            Err(SelectError::TooFew { .. })
        ));
        // nothing to remove: nothing removed, no scoring needed
        let none = synflow_select(&m, &p, &after, &[1, 28, 28], 0, 3).unwrap();
        assert!(none
            .iter()
            .all(|t| t.sum(Kind::Int64).int64_value(&[]) == 0));
    }

    #[test]
    fn snip_on_lenet_removes_exact_counts_and_mismatch_is_an_error() {
        let _g = ap_testkit::torch_lock();
        let (m, p) = lenet(6);
        let mask = Mask::dense(&p);
        let batches = vec![(
            Tensor::randn([16, 1, 28, 28], (Kind::Float, Device::Cpu)),
            Tensor::randint(10, [16], (Kind::Int64, Device::Cpu)),
        )];
        let s = snip_scores(&m, &p, &mask, &batches);
        let n = mask.kept() / 2;
        let sel = crate::select_by_scores(&s, &mask, n, &crate::Allocation::Global).unwrap();
        let removed: i64 = sel
            .iter()
            .map(|t| t.sum(Kind::Int64).int64_value(&[]))
            .sum();
        assert_eq!(removed, n);
        let other = Mask::from_entries(vec![(
            "x".into(),
            Tensor::ones([1], (Kind::Float, Device::Cpu)),
        )]);
        assert!(try_snip_scores(&m, &p, &other, &batches).is_err());
        assert!(try_synflow_scores(&m, &p, &other, &[1, 28, 28]).is_err());
    }
}
