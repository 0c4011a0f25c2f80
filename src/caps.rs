//! At most so many of something per key (open WebSockets per principal on an edge,
//! Subscribe streams per principal on core-svc). A [`Hold`] is one of them; the
//! count goes down when it is dropped, and a key at zero leaves no entry behind.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct Caps<K: Eq + Hash> {
    max: usize,
    open: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash> Clone for Caps<K> {
    fn clone(&self) -> Self {
        Self {
            max: self.max,
            open: self.open.clone(),
        }
    }
}

/// One of a key's `max`.
#[derive(Debug)]
pub struct Hold<K: Eq + Hash> {
    key: Option<K>,
    open: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash + Clone> Caps<K> {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// One more for `key`, unless it holds `max` already.
    pub fn hold(&self, key: K) -> Option<Hold<K>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.get(&key).copied().unwrap_or(0);
        if n >= self.max {
            return None;
        }
        open.insert(key.clone(), n + 1);
        Some(Hold {
            key: Some(key),
            open: self.open.clone(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Keys holding at least one, for tests and metrics.
    pub fn keys(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl<K: Eq + Hash> Hold<K> {
    /// A hold that counts against nothing (for callers exempt from the cap).
    pub fn exempt() -> Self {
        Self {
            key: None,
            open: Arc::default(),
        }
    }
}

impl<K: Eq + Hash> Drop for Hold<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_per_key_and_given_back_when_dropped() {
        let caps = Caps::new(2);
        let a = caps.hold("45").unwrap();
        let b = caps.hold("45").unwrap();
        assert!(caps.hold("45").is_none());
        let other = caps.hold("46").unwrap();
        drop(a);
        let c = caps.hold("45").unwrap();
        assert!(caps.hold("45").is_none());
        drop((b, c, other, Hold::<&str>::exempt()));
        assert_eq!(caps.keys(), 0, "nothing is left behind");
    }
}
