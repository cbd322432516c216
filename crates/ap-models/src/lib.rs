//! ap-models
