//! The commit sink that makes committed changes live: driver changes go to the
//! registry, events to the hub. Runs on the store's writer thread, in commit order.

use std::sync::Arc;

use crate::drivers::Registry;
use crate::hub::Hub;
use crate::store::{CommitSink, Effects};

pub struct Live {
    pub hub: Arc<Hub>,
    pub registry: Arc<Registry>,
}

impl CommitSink for Live {
    fn committed(&self, effects: &Effects) {
        for driver in &effects.drivers {
            self.registry.apply(driver);
        }
        self.hub.publish(&effects.events);
    }
}
