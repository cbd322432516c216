//! ap-prune
