//! AP, in one place: its settings ([`ApConfig`]), how much of a pruning event it takes
//! ([`Budget`]), and which weights it chooses ([`ap_select_budget`] and the ablations of
//! its components, [`ApOptions`]).

mod budget;
mod config;
mod select;

pub use budget::Budget;
pub use config::ApConfig;
pub use select::{
    ap_select, ap_select_budget, ap_select_with, ApBudget, ApOptions, ApScore, ApSelection,
    CandidateSign,
};
