//! Walking a topic's durable events after a cursor, a page at a time, for Subscribe
//! and Attach alike. Durable sequences are contiguous, and a replay must reach the
//! head read when it began (later events come live): a page that does not start
//! right after the last, or an end short of that head, means retention removed
//! events while they were being replayed, which the caller turns into a
//! ResyncRequired rather than a silent gap.

use logi::pb::{self, resync_required::Reason};

use super::Core;
use crate::cursor::Refusal;
use crate::error::Error;
use crate::hub;

/// Durable events read from storage per query.
pub const PAGE: usize = 256;

pub struct Replay {
    topic: String,
    /// The sequence number of the last event handed out.
    after: u64,
    /// The topic's head when the replay began.
    last_seq: u64,
    done: bool,
}

/// Why a replay stopped early.
pub enum Stop {
    /// Retention removed events being replayed: resync.
    Gap(Refusal),
    Failed(Error),
}

impl Replay {
    /// Events of `topic` after `offset`, up to the head `last_seq`.
    pub fn new(topic: String, offset: u64, last_seq: u64) -> Self {
        Self {
            topic,
            after: hub::split(offset).0,
            last_seq,
            done: false,
        }
    }

    /// The next page, in order; `None` once the head is reached.
    ///
    /// # Errors
    /// [`Stop`] on a gap or a failed read.
    pub async fn next_page(&mut self, core: &Core) -> Result<Option<Vec<pb::Event>>, Stop> {
        if self.done {
            return Ok(None);
        }
        let page = core
            .store
            .events_after(self.topic.clone(), self.after, PAGE)
            .await
            .map_err(Stop::Failed)?;
        let full = page.len() == PAGE;
        for event in &page {
            let seq = hub::split(event.cursor.map_or(0, |c| c.offset)).0;
            if seq != self.after + 1 {
                return Err(self.gap());
            }
            self.after = seq;
        }
        if !full {
            self.done = true;
            if self.after < self.last_seq {
                return Err(self.gap());
            }
        }
        Ok(Some(page).filter(|p| !p.is_empty()))
    }

    fn gap(&self) -> Stop {
        Stop::Gap(Refusal {
            reason: Reason::HistoryTruncated,
            detail: format!(
                "events after number {} were removed by retention while being replayed",
                self.after
            ),
        })
    }
}
