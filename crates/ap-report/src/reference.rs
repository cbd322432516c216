//! Reference numbers from the papers (ap-spec §5), as a table the report can place next to
//! this project's measurements.
//!
//! Every entry is a fact printed in (or read off a figure of) one of these papers:
//!
//! - [`Paper::Lth2019`]: J. Frankle and M. Carbin, *The Lottery Ticket Hypothesis: Finding
//!   Sparse, Trainable Neural Networks*, ICLR 2019 — LeNet-300-100 on MNIST and Conv-2/4/6
//!   on CIFAR-10, iterative magnitude pruning with reset to θ0.
//! - [`Paper::Lmc2020`]: J. Frankle, G. K. Dziugaite, D. M. Roy and M. Carbin, *Linear Mode
//!   Connectivity and the Lottery Ticket Hypothesis*, ICML 2020 — ResNet-20 and VGG-16 on
//!   CIFAR-10 with the OpenLTH recipes, IMP with weight rewinding.
//! - [`Paper::Rigl2020`]: U. Evci, T. Gale, J. Menick, P. S. Castro and E. Elsen, *Rigging
//!   the Lottery: Making All Tickets Winners*, ICML 2020 — WRN-22-2 on CIFAR-10 with ERK
//!   densities, RigL and static sparse training.
//! - [`Paper::Granet2021`]: S. Liu, T. Chen, X. Chen, Z. Atashgahi, L. Yin, H. Kou, L. Shen,
//!   M. Pechenizkiy, Z. Wang and D. C. Mocanu, *Sparse Training via Boosting Pruning
//!   Plasticity with Neuroregeneration*, NeurIPS 2021 — GraNet, GMP and RigL on VGG-19 /
//!   CIFAR-10 and ResNet-50 / CIFAR-100 at 90% sparsity.
//! - [`Paper::Ap2023`]: S. Liu, R. Ghosh, J. T. C. Tan and M. Motani, *AP: Selective
//!   Activation for De-sparsifying Pruned Neural Networks*, TMLR 2023 — the headline gain of
//!   AP over its host methods.
//!
//! The table is data, not code, so that adding a paper's number is one entry and the
//! rule that places it (nearest row within [`DENSITY_TOLERANCE`]) is tested once.
//! Models and datasets use this project's names (`lenet300-100`, `cifar10`); entries for
//! models the project does not build yet (`wrn22-2`, `resnet50`) are kept so the table is
//! complete and starts matching as soon as such runs exist.

use std::fmt;

/// The paper a reference number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paper {
    /// Frankle & Carbin, ICLR 2019 (lottery tickets).
    Lth2019,
    /// Frankle, Dziugaite, Roy & Carbin, ICML 2020 (rewinding, linear mode connectivity).
    Lmc2020,
    /// Evci, Gale, Menick, Castro & Elsen, ICML 2020 (RigL).
    Rigl2020,
    /// Liu et al., NeurIPS 2021 (GraNet).
    Granet2021,
    /// Liu, Ghosh, Tan & Motani, TMLR 2023 (AP).
    Ap2023,
}

impl Paper {
    /// Short citation for notes under tables.
    pub fn short(self) -> &'static str {
        match self {
            Paper::Lth2019 => "Frankle & Carbin 2019",
            Paper::Lmc2020 => "Frankle et al. 2020",
            Paper::Rigl2020 => "Evci et al. 2020 (RigL)",
            Paper::Granet2021 => "Liu et al. 2021 (GraNet)",
            Paper::Ap2023 => "Liu et al. 2023 (AP)",
        }
    }

    /// Full citation: title and venue.
    pub fn citation(self) -> &'static str {
        match self {
            Paper::Lth2019 => {
                "Frankle & Carbin, The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks, ICLR 2019"
            }
            Paper::Lmc2020 => {
                "Frankle, Dziugaite, Roy & Carbin, Linear Mode Connectivity and the Lottery Ticket Hypothesis, ICML 2020"
            }
            Paper::Rigl2020 => {
                "Evci, Gale, Menick, Castro & Elsen, Rigging the Lottery: Making All Tickets Winners, ICML 2020"
            }
            Paper::Granet2021 => {
                "Liu et al., Sparse Training via Boosting Pruning Plasticity with Neuroregeneration, NeurIPS 2021"
            }
            Paper::Ap2023 => {
                "Liu, Ghosh, Tan & Motani, AP: Selective Activation for De-sparsifying Pruned Neural Networks, TMLR 2023"
            }
        }
    }
}

/// What the paper states at a density. Accuracies are test accuracy in percent, like the
/// report's columns, so a cell can be read against the row's measured accuracy without AP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Claim {
    /// Test accuracy in %, printed with `decimals` decimals; `std` when the paper gives one;
    /// `approx` when the paper only says "≈" (or the number is read off a figure).
    Accuracy {
        /// Mean test accuracy in %.
        value: f64,
        /// Standard deviation in points, when given.
        std: Option<f64>,
        /// Decimals the paper prints.
        decimals: usize,
        /// The paper's number is approximate.
        approx: bool,
    },
    /// Test accuracy minus the same paper's dense accuracy, in points.
    GainOverDense(f64),
    /// At least the dense network's accuracy (the paper's "winning ticket" criterion).
    AtLeastDense,
    /// Matches the dense network's accuracy (within the paper's seed spread).
    MatchesDense,
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Claim::Accuracy {
                value,
                std,
                decimals,
                approx,
            } => {
                if approx {
                    f.write_str("≈ ")?;
                }
                write!(f, "{value:.decimals$}")?;
                if let Some(sd) = std {
                    write!(f, " ± {sd:.decimals$}")?;
                }
                Ok(())
            }
            Claim::GainOverDense(g) => write!(f, "dense {g:+.1}"),
            Claim::AtLeastDense => f.write_str("≥ dense"),
            Claim::MatchesDense => f.write_str("≈ dense"),
        }
    }
}

/// One reference number: who reports it, for which model / dataset / method, at which
/// density (kept fraction of prunable weights, 1.0 = dense).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    /// Source paper.
    pub paper: Paper,
    /// Model names (this project's spelling) the number applies to.
    pub models: &'static [&'static str],
    /// Dataset names.
    pub datasets: &'static [&'static str],
    /// Method labels (`SummaryRecord::method`) without AP; empty = any method, used for
    /// dense numbers because every method's round 0 trains the same dense network.
    pub methods: &'static [&'static str],
    /// Density the paper reports at.
    pub density: f64,
    /// The number.
    pub claim: Claim,
}

impl Reference {
    /// Whether this entry is about `model` / `dataset` / `method`.
    pub fn applies_to(&self, model: &str, dataset: &str, method: &str) -> bool {
        self.models.contains(&model)
            && self.datasets.contains(&dataset)
            && (self.methods.is_empty() || self.methods.contains(&method))
    }
}

/// Free-text context from a paper, printed under the matching tables: claims that have no
/// single density (AP's "+3–4 points at high sparsity") or that explain the numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Note {
    /// Source paper.
    pub paper: Paper,
    /// Model names.
    pub models: &'static [&'static str],
    /// Dataset names.
    pub datasets: &'static [&'static str],
    /// Method labels; empty = any method.
    pub methods: &'static [&'static str],
    /// The note, a sentence or two.
    pub text: &'static str,
}

impl Note {
    /// Whether this note is about `model` / `dataset` / `method`.
    pub fn applies_to(&self, model: &str, dataset: &str, method: &str) -> bool {
        self.models.contains(&model)
            && self.datasets.contains(&dataset)
            && (self.methods.is_empty() || self.methods.contains(&method))
    }
}

/// A row gets a reference only when its density is within this factor of the paper's
/// density (|ln(d / d_ref)| ≤ ln 1.12), and only the nearest such row. 1.12 is about half a
/// 20%-per-round IMP step (0.8^-½ ≈ 1.118), so a 20% grid always has a row close enough
/// while a row one full step away (1.25×, e.g. 80% for a dense number) never counts as
/// "the same density".
pub const DENSITY_TOLERANCE: f64 = 1.12;

const LENET: &[&str] = &["lenet300-100"];
const MNIST: &[&str] = &["mnist"];
const CIFAR10: &[&str] = &["cifar10"];
const CIFAR: &[&str] = &["cifar10", "cifar100"];
const RESNET20: &[&str] = &["resnet20", "resnet20-b"];
const ANY: &[&str] = &[];

const fn acc(value: f64, decimals: usize) -> Claim {
    Claim::Accuracy {
        value,
        std: None,
        decimals,
        approx: false,
    }
}

const fn approx(value: f64, decimals: usize) -> Claim {
    Claim::Accuracy {
        value,
        std: None,
        decimals,
        approx: true,
    }
}

const fn r(
    paper: Paper,
    models: &'static [&'static str],
    datasets: &'static [&'static str],
    methods: &'static [&'static str],
    density: f64,
    claim: Claim,
) -> Reference {
    Reference {
        paper,
        models,
        datasets,
        methods,
        density,
        claim,
    }
}

/// The papers' numbers (ap-spec §5). Densities are the papers' own (3.6% = 96.4% sparsity).
pub const REFERENCES: &[Reference] = &[
    // LTH, LeNet-300-100 / MNIST, IMP with reset to θ0, 50K iterations per round.
    r(Paper::Lth2019, LENET, MNIST, ANY, 1.0, approx(98.0, 1)),
    r(
        Paper::Lth2019,
        LENET,
        MNIST,
        &["imp"],
        0.135,
        Claim::GainOverDense(0.3),
    ),
    r(
        Paper::Lth2019,
        LENET,
        MNIST,
        &["imp"],
        0.036,
        Claim::AtLeastDense,
    ),
    // LTH, Conv-2/4/6 / CIFAR-10: best ticket over dense, at its density.
    r(
        Paper::Lth2019,
        &["conv2"],
        CIFAR10,
        &["imp"],
        0.046,
        Claim::GainOverDense(3.4),
    ),
    r(
        Paper::Lth2019,
        &["conv4"],
        CIFAR10,
        &["imp"],
        0.111,
        Claim::GainOverDense(3.5),
    ),
    r(
        Paper::Lth2019,
        &["conv6"],
        CIFAR10,
        &["imp"],
        0.264,
        Claim::GainOverDense(3.3),
    ),
    // Rewinding, ResNet-20 / CIFAR-10 (OpenLTH recipe): matches dense from 51.2% to 13.4%.
    r(Paper::Lmc2020, RESNET20, CIFAR10, ANY, 1.0, acc(91.7, 1)),
    r(
        Paper::Lmc2020,
        RESNET20,
        CIFAR10,
        &["imp-rewind"],
        0.512,
        Claim::MatchesDense,
    ),
    r(
        Paper::Lmc2020,
        RESNET20,
        CIFAR10,
        &["imp-rewind"],
        0.134,
        Claim::MatchesDense,
    ),
    // Rewinding, VGG-16 / CIFAR-10: matches dense from 6.9% to 1.5%.
    r(Paper::Lmc2020, &["vgg16"], CIFAR10, ANY, 1.0, acc(93.7, 1)),
    r(
        Paper::Lmc2020,
        &["vgg16"],
        CIFAR10,
        &["imp-rewind"],
        0.069,
        Claim::MatchesDense,
    ),
    r(
        Paper::Lmc2020,
        &["vgg16"],
        CIFAR10,
        &["imp-rewind"],
        0.015,
        Claim::MatchesDense,
    ),
    // GraNet, 90% sparsity.
    r(
        Paper::Granet2021,
        &["vgg19"],
        CIFAR10,
        &["granet"],
        0.1,
        Claim::Accuracy {
            value: 93.80,
            std: Some(0.10),
            decimals: 2,
            approx: false,
        },
    ),
    r(
        Paper::Granet2021,
        &["vgg19"],
        CIFAR10,
        &["gmp"],
        0.1,
        acc(93.59, 2),
    ),
    r(
        Paper::Granet2021,
        &["vgg19"],
        CIFAR10,
        &["rigl"],
        0.1,
        acc(93.38, 2),
    ),
    r(
        Paper::Granet2021,
        &["resnet50"],
        &["cifar100"],
        &["granet"],
        0.1,
        acc(77.29, 2),
    ),
    r(
        Paper::Granet2021,
        &["resnet50"],
        &["cifar100"],
        &["gmp"],
        0.1,
        acc(76.91, 2),
    ),
    r(
        Paper::Granet2021,
        &["resnet50"],
        &["cifar100"],
        &["rigl"],
        0.1,
        acc(76.50, 2),
    ),
    // RigL, WRN-22-2 / CIFAR-10 with ERK densities, at 50 / 80 / 90 / 95% sparsity.
    r(
        Paper::Rigl2020,
        &["wrn22-2"],
        CIFAR10,
        &["rigl"],
        0.5,
        acc(94.2, 1),
    ),
    r(
        Paper::Rigl2020,
        &["wrn22-2"],
        CIFAR10,
        &["rigl"],
        0.2,
        acc(93.6, 1),
    ),
    r(
        Paper::Rigl2020,
        &["wrn22-2"],
        CIFAR10,
        &["rigl"],
        0.1,
        acc(92.9, 1),
    ),
    r(
        Paper::Rigl2020,
        &["wrn22-2"],
        CIFAR10,
        &["rigl"],
        0.05,
        acc(91.8, 1),
    ),
    // Static sparse training with an ERK random mask is this project's `pai-random` (with
    // ERK allocation).
    r(
        Paper::Rigl2020,
        &["wrn22-2"],
        CIFAR10,
        &["pai-random"],
        0.5,
        acc(94.1, 1),
    ),
    r(
        Paper::Rigl2020,
        &["wrn22-2"],
        CIFAR10,
        &["pai-random"],
        0.2,
        acc(92.9, 1),
    ),
    r(
        Paper::Rigl2020,
        &["wrn22-2"],
        CIFAR10,
        &["pai-random"],
        0.1,
        acc(91.5, 1),
    ),
    r(
        Paper::Rigl2020,
        &["wrn22-2"],
        CIFAR10,
        &["pai-random"],
        0.05,
        acc(89.0, 1),
    ),
];

const CIFAR_MODELS: &[&str] = &[
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet20-b",
    "resnet32-b",
    "resnet56-b",
    "resnet50",
    "vgg11",
    "vgg16",
    "vgg19",
    "wrn22-2",
];

/// The papers' free-text context (ap-spec §5).
pub const NOTES: &[Note] = &[
    Note {
        paper: Paper::Lth2019,
        models: LENET,
        datasets: MNIST,
        methods: &["imp"],
        text: "LeNet-300-100/MNIST, 50K iterations per round: dense ≈ 98% test accuracy; \
               winning tickets stay at or above dense accuracy down to ≈ 3.6% density, \
               peaking ≈ +0.3 pt near 13.5%; random re-initialisation degrades from ≈ 21% density.",
    },
    Note {
        paper: Paper::Lth2019,
        models: &["conv2", "conv4", "conv6"],
        datasets: CIFAR10,
        methods: &["imp"],
        text: "Conv-2/4/6/CIFAR-10 (Adam 2e-4 / 3e-4 / 3e-4, 20K/25K/30K iterations): best tickets \
               +3.4 / +3.5 / +3.3 points over dense at densities 4.6% / 11.1% / 26.4%.",
    },
    Note {
        paper: Paper::Lmc2020,
        models: RESNET20,
        datasets: CIFAR10,
        methods: ANY,
        text: "ResNet-20/CIFAR-10 (SGD 0.1, 160 epochs): dense ≈ 91.7%; IMP with rewinding to \
               iteration 500 matches dense from 51.2% to 13.4% density; random pruning only above 80%.",
    },
    Note {
        paper: Paper::Lmc2020,
        models: &["vgg16"],
        datasets: CIFAR10,
        methods: ANY,
        text: "VGG-16/CIFAR-10: dense ≈ 93.7%; IMP with rewinding matches dense from 6.9% to 1.5% density.",
    },
    Note {
        paper: Paper::Granet2021,
        models: &["vgg19", "resnet50"],
        datasets: CIFAR,
        methods: &["granet", "gmp", "rigl"],
        text: "At 90% sparsity: VGG-19/CIFAR-10 GraNet 93.80 ± 0.10, GMP 93.59, RigL 93.38; \
               ResNet-50/CIFAR-100 GraNet 77.29, GMP 76.91, RigL 76.50.",
    },
    Note {
        paper: Paper::Rigl2020,
        models: &["wrn22-2"],
        datasets: CIFAR10,
        methods: &["rigl", "pai-random"],
        text: "WRN-22-2/CIFAR-10 with ERK densities at 50 / 80 / 90 / 95% sparsity: RigL \
               94.2 / 93.6 / 92.9 / 91.8; static sparse 94.1 / 92.9 / 91.5 / 89.0.",
    },
    Note {
        paper: Paper::Ap2023,
        models: CIFAR_MODELS,
        datasets: CIFAR,
        methods: ANY,
        text: "AP's headline: +3–4 points of test accuracy with AP on CIFAR-10/100 (ResNet, VGG, \
               DenseNet, MobileNet) at high sparsity; the paper gives no single density, so the \
               claim is compared with the AP gain column, not placed in the reference column.",
    },
];

/// References for one table (model / dataset / method without AP), in table order.
pub fn references_for(model: &str, dataset: &str, method: &str) -> Vec<&'static Reference> {
    REFERENCES
        .iter()
        .filter(|r| r.applies_to(model, dataset, method))
        .collect()
}

/// Notes for one table.
pub fn notes_for(model: &str, dataset: &str, method: &str) -> Vec<&'static Note> {
    NOTES
        .iter()
        .filter(|n| n.applies_to(model, dataset, method))
        .collect()
}

/// Index of the row whose density is nearest (in log ratio) to `density`, if it is within
/// [`DENSITY_TOLERANCE`]; non-finite or non-positive row densities never match.
pub fn nearest_row(rows: &[f64], density: f64) -> Option<usize> {
    let limit = DENSITY_TOLERANCE.ln() + 1e-12;
    rows.iter()
        .enumerate()
        .filter(|(_, &d)| d.is_finite() && d > 0.0)
        .map(|(i, &d)| (i, (d / density).ln().abs()))
        .filter(|&(_, dist)| dist <= limit)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The "paper reference" column for one table: for each row (given by its density), the
/// claims placed there by [`nearest_row`], joined with "; " when several land on one row.
pub fn column(model: &str, dataset: &str, method: &str, rows: &[f64]) -> Vec<Option<String>> {
    let mut cells: Vec<Option<String>> = vec![None; rows.len()];
    for r in references_for(model, dataset, method) {
        if let Some(i) = nearest_row(rows, r.density) {
            let text = r.claim.to_string();
            cells[i] = Some(match cells[i].take() {
                Some(prev) => format!("{prev}; {text}"),
                None => text,
            });
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_lenet_row_gets_98_and_half_density_row_nothing() {
        let rows: Vec<f64> = (0..17).map(|k| 0.8f64.powi(k)).collect();
        let col = column("lenet300-100", "mnist", "imp", &rows);
        assert_eq!(col[0].as_deref(), Some("≈ 98.0"));
        // 51.2% density (round 3): the paper gives no number there.
        assert_eq!(col[3], None);
        assert_eq!(col[1], None, "80% is a full step from dense, not 'near'");
        // 13.42% (round 9) is the nearest to 13.5%, 3.52% (round 15) to 3.6%.
        assert_eq!(col[9].as_deref(), Some("dense +0.3"));
        assert_eq!(col[15].as_deref(), Some("≥ dense"));
        assert_eq!(col.iter().flatten().count(), 3);
    }

    #[test]
    fn dense_number_applies_to_every_method_but_sparse_ones_do_not() {
        let rows = [1.0, 0.135];
        let col = column("lenet300-100", "mnist", "gmp", &rows);
        assert_eq!(col, vec![Some("≈ 98.0".into()), None]);
        assert!(column("lenet300-100", "fashion-mnist", "imp", &rows)
            .iter()
            .all(Option::is_none));
    }

    #[test]
    fn only_the_nearest_row_within_tolerance() {
        // GraNet's 10% number: 9.15% (ratio 1.09) is within 1.12, 5% is not.
        let col = column("vgg19", "cifar10", "granet", &[0.3025, 0.0915, 0.05]);
        assert_eq!(col, vec![None, Some("93.80 ± 0.10".into()), None]);
        assert!(column("vgg19", "cifar10", "gmp", &[0.05])[0].is_none());
        // Two rows both within tolerance: the nearer one wins.
        assert_eq!(nearest_row(&[0.105, 0.099], 0.1), Some(1));
        assert_eq!(nearest_row(&[f64::NAN, 0.0], 0.1), None);
    }

    #[test]
    fn every_entry_is_well_formed() {
        for r in REFERENCES {
            assert!(r.density > 0.0 && r.density <= 1.0, "{r:?}");
            assert!(!r.models.is_empty() && !r.datasets.is_empty(), "{r:?}");
        }
        for n in NOTES {
            assert!(!n.models.is_empty() && !n.datasets.is_empty(), "{n:?}");
        }
        assert_eq!(notes_for("resnet20", "cifar10", "imp").len(), 2);
        assert!(notes_for("lenet300-100", "mnist", "imp")[0]
            .text
            .contains("3.6% density"));
    }
}
