//! The commit sink that makes committed changes live: driver changes go to the
//! registry, pending bookings to the dispatch schedule, events to the hub. Runs on
//! the store's writer thread, in commit order.

use std::sync::Arc;

use crate::dispatch::Schedule;
use crate::drivers::Registry;
use crate::hub::Hub;
use crate::store::{CommitSink, Effects};

pub struct Live {
    pub hub: Arc<Hub>,
    pub registry: Arc<Registry>,
    pub schedule: Arc<Schedule>,
}

impl CommitSink for Live {
    fn committed(&self, effects: &Effects) {
        for driver in &effects.drivers {
            self.registry.apply(driver);
        }
        for booking in &effects.created {
            self.schedule.track(booking, std::time::Duration::ZERO);
        }
        for id in &effects.settled {
            self.schedule.settled(*id);
        }
        self.hub.publish(&effects.events);
    }
}
