//! One-time passwords that start a trip.
//!
//! Six digits drawn uniformly from the thread-local CSPRNG (ChaCha, seeded from the
//! OS), compared in constant time, at most [`MAX_FAILURES`] wrong tries per issued
//! code. Never log one.

use rand::Rng;
use subtle::ConstantTimeEq;

/// Wrong tries allowed per issued OTP; the next try is refused until a new one.
pub const MAX_FAILURES: u32 = 5;

/// A fresh 6-digit code.
pub fn generate() -> String {
    let n: u32 = rand::rng().random_range(0..1_000_000);
    format!("{n:06}")
}

/// The outcome of one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Correct,
    /// Wrong; this many tries are left.
    Wrong {
        left: u32,
    },
    /// Refused without comparing: too many wrong tries already.
    Locked,
}

/// Compares `guess` to `expected` unless `failures` already reached the limit.
pub fn check(expected: &str, guess: &str, failures: u32) -> Check {
    if failures >= MAX_FAILURES {
        return Check::Locked;
    }
    if bool::from(expected.as_bytes().ct_eq(guess.as_bytes())) {
        Check::Correct
    } else {
        Check::Wrong {
            left: MAX_FAILURES - failures - 1,
        }
    }
}

/// Whether `otp` has the shape of a code: exactly six ASCII digits.
pub fn well_formed(otp: &str) -> bool {
    otp.len() == 6 && otp.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_vary() {
        let codes: std::collections::HashSet<String> = (0..200).map(|_| generate()).collect();
        assert!(codes.iter().all(|c| well_formed(c)));
        assert!(
            codes.len() > 190,
            "200 draws gave only {} distinct codes",
            codes.len()
        );
    }

    #[test]
    fn five_wrong_tries_then_locked() {
        assert_eq!(check("123456", "123456", 0), Check::Correct);
        assert_eq!(check("123456", "654321", 0), Check::Wrong { left: 4 });
        assert_eq!(check("123456", "654321", 4), Check::Wrong { left: 0 });
        assert_eq!(check("123456", "123456", 5), Check::Locked);
        assert_eq!(check("123456", "12345", 0), Check::Wrong { left: 4 });
    }

    #[test]
    fn shape() {
        assert!(well_formed("000123"));
        assert!(!well_formed("12345"));
        assert!(!well_formed("12345a"));
        assert!(!well_formed("１２３４５６"));
    }
}
