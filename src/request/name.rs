//! Names of functions and of packages in the model repository: validated once, where they
//! enter (a request's path or body, a token file, a repository listing), and carried typed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Names a function may not take: fixed segments of routes where a function's name also goes
/// (`/v2/models/stats` is every function's statistics).
pub const RESERVED: &[&str] = &["stats"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid name {0:?}: use letters, digits, '_', '-' and '.', starting with a letter or digit, at most 64 characters")]
    Invalid(String),
    #[error("{0:?} is a fixed segment of the API's routes and cannot name a function")]
    Reserved(String),
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`: safe in a path segment, a file name and a metric label.
fn follows_alphabet(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(name: &str) -> Result<Self, NameError> {
                if follows_alphabet(name) {
                    Ok(Self(name.to_string()))
                } else {
                    Err(NameError::Invalid(name.to_string()))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(name: String) -> Result<Self, NameError> {
                Self::parse(&name)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type! {
    /// The name of a deployed function.
    FunctionName
}

name_type! {
    /// The name of a package (a folder) in the model repository.
    ModelName
}

impl FunctionName {
    /// A name a new function may take: valid, and not a fixed segment of a route.
    pub fn for_new_function(name: &str) -> Result<Self, NameError> {
        let parsed = Self::parse(name)?;
        if RESERVED.contains(&name) {
            return Err(NameError::Reserved(name.to_string()));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_safe_alphabet() {
        for ok in ["bert", "all-MiniLM-L6-v2", "a.b_c", "9lives", &"x".repeat(64)] {
            assert_eq!(FunctionName::parse(ok).unwrap().as_str(), ok);
            assert!(ModelName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".hidden", "..", "a/b", "a b", "é", "a%2Fb", &"x".repeat(65)] {
            assert_eq!(FunctionName::parse(bad), Err(NameError::Invalid(bad.to_string())), "{bad}");
            assert!(ModelName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_is_checked_when_it_is_deserialized() {
        let ok: FunctionName = serde_json::from_str("\"bert\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"bert\"");
        let err = serde_json::from_str::<FunctionName>("\"../etc\"").unwrap_err();
        assert!(err.to_string().contains("invalid name"), "{err}");
    }

    #[test]
    fn a_new_function_may_not_take_a_route_segment() {
        assert_eq!(FunctionName::for_new_function("stats"), Err(NameError::Reserved("stats".into())));
        assert!(FunctionName::parse("stats").is_ok(), "an existing name is only parsed");
    }
}
