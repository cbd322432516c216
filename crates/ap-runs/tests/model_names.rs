//! The papers' reference table (`ap_report::reference`, which knows nothing of libtorch and
//! so names models by string) spells every model it shares with this project exactly as
//! the registry (`ap_models::ModelKind`) does, so its entries match the report's rows.

use ap_models::{ModelFamily, ModelKind};
use ap_report::reference::{NOTES, REFERENCES};

/// Models of the papers this project does not build (yet); the table keeps their numbers.
const UNBUILT: &[&str] = &["resnet50", "wrn22-2"];

fn every_named_model() -> Vec<&'static str> {
    let refs = REFERENCES.iter().flat_map(|r| r.models.iter());
    let notes = NOTES.iter().flat_map(|n| n.models.iter());
    refs.chain(notes).copied().collect()
}

#[test]
fn every_model_in_the_table_is_registered_or_known_unbuilt() {
    for name in every_named_model() {
        let registered = name.parse::<ModelKind>().is_ok();
        assert!(
            registered != UNBUILT.contains(&name),
            "`{name}`: a registered name, or one of {UNBUILT:?} (and not both)"
        );
    }
    for name in UNBUILT {
        assert!(
            every_named_model().contains(name),
            "{name} is no longer named"
        );
    }
}

/// AP's headline note covers every ResNet and VGG this project builds (its CIFAR families).
#[test]
fn the_ap_headline_covers_every_registered_resnet_and_vgg() {
    let headline = NOTES
        .iter()
        .find(|n| n.text.starts_with("AP's headline"))
        .expect("the AP headline note");
    for kind in ModelKind::ALL {
        let cifar_family = matches!(kind.family(), ModelFamily::ResNet | ModelFamily::Vgg);
        assert_eq!(
            headline.models.contains(&kind.name()),
            cifar_family,
            "{kind}"
        );
    }
}

/// A spec for `model` on `dataset`, with `prune` as its `[prune]` table.
fn spec(model: &str, dataset: &str, prune: &str) -> String {
    format!(
        "model = \"{model}\"\ndataset = \"{dataset}\"\nseed = 0\n[train]\nbatch_size = 60\n\
         iterations = 100\noptimizer = {{ kind = \"adam\", lr = 1e-3 }}\n[prune]\n{prune}\n"
    )
}

const IMP: &str = "method = \"imp\"\nrounds = 1\nrate = 0.2";

/// Every registered name is a spec's `model`, written back unchanged in the canonical JSON
/// (the run key hashes it), and a RigL spec that names no dense layers gets the kind's.
#[test]
fn every_kind_is_a_spec_model_with_its_name_in_the_canonical_json() {
    // Validation builds each model once (to list its layers), drawing from libtorch.
    let _g = ap_testkit::torch_lock();
    for kind in ModelKind::ALL {
        let s = ap_runs::RunSpec::parse(&spec(kind.name(), "cifar10", IMP), "s.toml").unwrap();
        assert_eq!(s.model, kind);
        s.validate().unwrap();
        let json = s.canonical_json();
        assert!(
            json.starts_with(&format!("{{\"model\":\"{kind}\",")),
            "{json}"
        );
        let rigl = spec(kind.name(), "cifar10", "method = \"rigl\"\ndensity = 0.1");
        let json = ap_runs::RunSpec::parse(&rigl, "r.toml")
            .unwrap()
            .canonical_json();
        let dense = format!("\"dense_layers\":[\"{}\"]", kind.rigl_dense_layers()[0]);
        assert!(json.contains(&dense), "{json}");
    }
}

#[test]
fn an_unknown_model_is_a_parse_error_listing_the_valid_names() {
    let e = ap_runs::RunSpec::parse(&spec("lenet7", "mnist", IMP), "s.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("s.toml:1:") && e.contains("`lenet7`"), "{e}");
    for kind in ModelKind::ALL {
        assert!(e.contains(kind.name()), "{e}");
    }
}

/// The model's input expectations are checked against the dataset's image shape when a
/// spec is validated, not when its run has loaded the data.
#[test]
fn validation_checks_the_dataset_suits_the_model() {
    let _g = ap_testkit::torch_lock(); // validation builds the model to list its layers
    let parse = |model, dataset| ap_runs::RunSpec::parse(&spec(model, dataset, IMP), "s.toml");
    let e = parse("vgg16", "mnist").unwrap().validate().unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("dataset = \"mnist\"") && e.contains("divisible by 32"),
        "{e}"
    );
    parse("resnet20", "mnist").unwrap().validate().unwrap();
    parse("conv6", "fashion-mnist")
        .unwrap()
        .validate()
        .unwrap_err();
    parse("vgg16", "cifar100").unwrap().validate().unwrap();
}
