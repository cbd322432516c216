//! ap-eval
