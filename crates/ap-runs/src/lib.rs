//! ap-runs
