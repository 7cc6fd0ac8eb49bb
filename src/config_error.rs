//! The vocabulary every capability's config parser shares: one error type naming the field, the bad
//! value and what is allowed, and the checks more than one capability makes.
//!
//! It sits below every room so that each capability can parse its own part of the `filter_config`
//! beside its code, and the config module assembles the parts without an import cycle.

use std::fmt;

/// A rejected `filter_config`: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's path, such as `mock.content.mode`, or `.` for the document itself.
    pub field: String,
    /// What is wrong: the bad value and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid filter_config: field `{}`: {}",
            self.field, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A rejected `field` and what is wrong with it.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ConfigError {
    /// What serde met reading the JSON, named by where it met it: `.` for the document itself
    /// (an unknown key named `""` has an empty path).
    pub fn from_serde(error: &serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = error.path().to_string();
        let field = if path.is_empty() { "." } else { path.as_str() };
        Self::new(field, error.inner().to_string())
    }

    /// The same error, its field under `prefix` (such as `routes.<name>`).
    pub fn under(self, prefix: &str) -> Self {
        Self {
            field: format!("{prefix}.{}", self.field),
            message: self.message,
        }
    }
}

/// Checks a configured name that becomes a stats label value: letters, digits and `_` only, so
/// that it reads the same in every stats format.
pub fn check_label_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        return Ok(());
    }
    Err(ConfigError::new(
        field,
        format!("{name:?} is not a name; allowed: letters, digits and '_'"),
    ))
}

/// The largest compiled regex a config may use, in bytes per pattern: a bound on memory and
/// matching time (the engine is linear-time).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
