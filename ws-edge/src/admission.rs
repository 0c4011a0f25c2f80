//! What an edge admits: open connections at most (a [`Slot`] each, held by the
//! connection and then by its session), and WebSockets per principal at most (a
//! [`PrincipalHold`] each, counted by [`logi::caps`]). Both are given back when dropped, so a vanished
//! client leaves nothing behind.

use std::sync::Arc;

use logi::auth::{Principal, Role};
use logi::caps::{Caps, Hold};
use logi::id::Id;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One open client connection's place; shared by the connection and its session.
#[derive(Debug, Clone)]
pub struct Slot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// The open-connection limit.
#[derive(Debug, Clone)]
pub struct Slots(Arc<Semaphore>);

impl Slots {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max)))
    }

    /// A place for one more connection, if any is free.
    pub fn take(&self) -> Option<Slot> {
        self.0
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|p| Slot(Arc::new(p)))
    }
}

/// The connection limit when none is configured: nine tenths of the soft limit on
/// open files, leaving the rest for core-svc's connection, logs and the like.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let files = if known && limit.rlim_cur != libc::RLIM_INFINITY {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1 << 20
    };
    (files / 10 * 9).max(1)
}

/// WebSockets per principal (role and id), at most so many each.
pub type PrincipalCaps = Caps<(Role, Id)>;
/// One WebSocket of a principal.
pub type PrincipalHold = Hold<(Role, Id)>;

/// The key a principal is counted under.
pub fn key(principal: &Principal) -> (Role, Id) {
    (principal.role, principal.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_and_come_back() {
        let slots = Slots::new(1);
        let first = slots.take().unwrap();
        let shared = first.clone();
        assert!(slots.take().is_none());
        drop(first);
        assert!(slots.take().is_none(), "still held by the session");
        drop(shared);
        assert!(slots.take().is_some());
        assert!(default_max_connections() >= 1);
    }
}
