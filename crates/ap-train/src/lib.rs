//! ap-train
