//! A setting that is out of range or inconsistent, typed so that every crate's checks
//! report it the same way and callers can tell which field it was.

/// A bad setting: the field (a dotted path as a spec writes it, e.g. `prune.rate`) and
/// what is wrong with it. The message starts with the field: `prune.rate = 1.5 must be
/// in (0, 1)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct FieldError {
    /// The field, as a spec names it.
    pub field: String,
    /// What is wrong, as the rest of the sentence (`= 1.5 must be in (0, 1)`).
    pub problem: String,
}

impl FieldError {
    /// `field` and the rest of the sentence saying what is wrong.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// `field = value` outside `range` (written as the message shows it, e.g. `(0, 1)`).
    pub fn out_of(field: impl Into<String>, value: impl std::fmt::Display, range: &str) -> Self {
        FieldError::new(field, format!("= {value} must be in {range}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_starts_with_the_field() {
        let e = FieldError::out_of("prune.rate", 1.5, "(0, 1)");
        assert_eq!(e.to_string(), "prune.rate = 1.5 must be in (0, 1)");
        assert_eq!(e.field, "prune.rate");
    }
}
