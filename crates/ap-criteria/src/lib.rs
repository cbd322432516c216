//! ap-criteria
