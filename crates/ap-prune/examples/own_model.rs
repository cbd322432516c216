//! The crates as a library: your own network, its dead neuron rate, a mask, and one
//! pruning event with AP. `cargo run -p ap-prune --example own_model`
use ap_criteria::{Allocation, ApConfig, Budget, Criterion, HostCriterion};
use ap_eval::{evaluate, EvalReport};
use ap_mask::Mask;
use ap_models::{ActivationProbe, Model, Network};
use ap_prune::{pruning_event, EventAt};
use ap_tensor::NamedParams;
use tch::nn::{self, Module, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

/// Your network: report each ReLU output to the probe, list the prunable weights.
#[derive(Debug)]
struct TwoLayer(nn::Linear, nn::Linear);

impl Network for TwoLayer {
    fn forward(&self, xs: &Tensor, _train: bool, probe: &mut dyn ActivationProbe) -> Tensor {
        let h = self.0.forward(xs).relu();
        probe.observe("relu1", &h);
        self.1.forward(&h)
    }
    fn prunable(&self) -> Vec<String> {
        vec!["fc1.weight".into(), "fc2.weight".into()]
    }
    fn relu_sites(&self) -> Vec<(String, i64)> {
        vec![("relu1".into(), 64)]
    }
}

fn show(when: &str, r: &EvalReport, mask: &Mask) {
    let (acc, dynamic, static_) = (r.accuracy, r.dnr.dynamic, r.dnr.static_);
    let density = mask.report().density();
    println!("{when}: accuracy {acc:.3}, DNR {dynamic:.3} dynamic, {static_:.3} static, density {density:.3}");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let fc1 = nn::linear(vs.root() / "fc1", 20, 64, Default::default());
    let fc2 = nn::linear(vs.root() / "fc2", 64, 2, Default::default());
    let (net, kind) = (Box::new(TwoLayer(fc1, fc2)), None);
    let model = Model {
        vs,
        net,
        kind,
        channels_last: false,
    };
    // Toy data: the class is the sign of the sum of the features.
    let x = Tensor::randn([512, 20], (Kind::Float, Device::Cpu));
    let y = x.sum_dim_intlist(1, false, Kind::Float).gt(0.0);
    let y = y.to_kind(Kind::Int64);

    let params = NamedParams::from_var_store(&model.vs, &model.net.prunable())?;
    let mut mask = Mask::dense(&params);
    let phase_start = params.snapshot(); // AP ranks by movement since here
    let mut opt = nn::Sgd::default().build(&model.vs, 0.1)?;
    for _ in 0..200 {
        opt.backward_step(&model.forward(&x, true).cross_entropy_for_logits(&y));
    }
    show("trained", &evaluate(&model, &x, &y, 256), &mask);

    // One event: 20% of the survivors, AP's 2% of them chosen among kept negative
    // weights that moved least; the host (global magnitude) takes the rest.
    let ap = ApConfig::default();
    let host = HostCriterion::new(Criterion::Magnitude, &Allocation::Global, &model);
    let budget = Budget::from_rates(mask.kept(), 0.2, Some(&ap), 0);
    let (index, iteration) = (0, None);
    let at = EventAt {
        budget,
        index,
        iteration,
    };
    let e = pruning_event(&params, &mut mask, &phase_start, &host, Some(&ap), at)?;
    println!(
        "removed {} by magnitude, {} by AP",
        e.host_removed, e.ap_removed
    );
    show("pruned", &evaluate(&model, &x, &y, 256), &mask);
    Ok(())
}
