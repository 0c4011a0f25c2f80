//! Rider and driver ids.
//!
//! Ids are embedded in topic names (`driver_{id}_bookings`), so they may not contain
//! `_`: otherwise driver `7_available` would read driver `7`'s offers.

use std::fmt;

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("may only contain A-Z, a-z, 0-9, '-' and '.' (found {0:?})")]
    BadChar(char),
}

/// Checks that `id` can name a rider, driver or service.
///
/// # Errors
/// [`IdError`] says what is wrong with it.
pub fn validate(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

/// `s` as a number, if it is one written the one way: decimal digits only, no sign,
/// no leading zero (so the number reads back as the same text).
pub fn canonical_number(s: &str) -> Option<u64> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let canonical = digits && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// A validated rider or driver id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// # Errors
    /// [`IdError`] when `id` is not a valid id.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        validate(&id)?;
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_numbers_uuids_and_names() {
        for id in ["45", "7f3c-11ee.b", "driver456", "a"] {
            assert_eq!(validate(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn numbers_are_read_only_when_written_the_one_way() {
        assert_eq!(canonical_number("45"), Some(45));
        assert_eq!(canonical_number("0"), Some(0));
        for not in ["", "045", "+5", "-5", "4 5", "x", "18446744073709551616"] {
            assert_eq!(canonical_number(not), None, "{not:?}");
        }
    }

    #[test]
    fn rejects_what_would_break_topic_names() {
        assert_eq!(validate(""), Err(IdError::Empty));
        assert_eq!(validate("7_available"), Err(IdError::BadChar('_')));
        assert_eq!(validate("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(validate(&"x".repeat(65)), Err(IdError::TooLong));
        assert_eq!(validate(&"x".repeat(64)), Ok(()));
    }
}
