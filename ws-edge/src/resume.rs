//! The opt-in resume of apps (`?recover=1`, `?since=<cursor>`).
//!
//! With `recover=1` every durable frame carries a `"cursor"`: where the app stands
//! in each topic of its route once it has that frame. Reconnecting with
//! `?since=<cursor>` resumes every topic right after it: the durable frames missed
//! meanwhile are replayed in order, then the stream goes live. A cursor that cannot
//! be honoured gets a `resync` frame, then the snapshot.
//!
//! The text is `{epoch}.{offset}.{offset}…`, one offset per topic of the route in
//! the route's order, `-` for a topic the app had heard nothing of yet (it is
//! resumed with a snapshot). Apps treat it as opaque.

use logi::id::canonical_number as number;
use logi::pb;

/// The longest `since` accepted.
pub const MAX_LEN: usize = 256;

/// An app's position in the topics of its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: Option<u64>,
    /// Per topic of the route, the offset of the last event sent.
    pub offsets: Vec<Option<u64>>,
}

/// Why a `since` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("the cursor is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("the cursor is not one this route hands out: reconnect without since")]
    Malformed,
}

impl Position {
    /// Nothing heard yet, in any of `topics` topics.
    pub fn new(topics: usize) -> Self {
        Self {
            epoch: None,
            offsets: vec![None; topics],
        }
    }

    /// Parses a `since` of a route with `topics` topics.
    ///
    /// # Errors
    /// [`CursorError`] when it is not a cursor of such a route.
    pub fn parse(text: &str, topics: usize) -> Result<Self, CursorError> {
        if text.len() > MAX_LEN {
            return Err(CursorError::TooLong);
        }
        let mut parts = text.split('.');
        let epoch = parts
            .next()
            .and_then(number)
            .ok_or(CursorError::Malformed)?;
        let offsets = parts
            .map(|p| match p {
                "-" => Ok(None),
                _ => number(p).map(Some).ok_or(CursorError::Malformed),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if offsets.len() != topics {
            return Err(CursorError::Malformed);
        }
        Ok(Self {
            epoch: Some(epoch),
            offsets,
        })
    }

    /// The cursor text, once the epoch is known.
    pub fn encode(&self) -> Option<String> {
        let epoch = self.epoch?;
        let mut text = epoch.to_string();
        for offset in &self.offsets {
            text.push('.');
            match offset {
                Some(o) => text.push_str(&o.to_string()),
                None => text.push('-'),
            }
        }
        Some(text)
    }

    /// The resume cursors to subscribe with: the known ones, by topic name.
    pub fn resume<'a>(
        &self,
        topics: &'a [String],
    ) -> impl Iterator<Item = (&'a String, pb::Cursor)> + use<'a, '_> {
        topics.iter().zip(&self.offsets).filter_map(|(t, o)| {
            Some((
                t,
                pb::Cursor {
                    epoch: self.epoch?,
                    offset: (*o)?,
                },
            ))
        })
    }

    /// The position as it stands before an event at `cursor`: the same, but in
    /// that event's epoch (another epoch starts every topic over).
    pub fn before(&self, cursor: pb::Cursor) -> Self {
        if self.epoch == Some(cursor.epoch) {
            return self.clone();
        }
        Self {
            epoch: Some(cursor.epoch),
            offsets: vec![None; self.offsets.len()],
        }
    }

    /// Moves topic `index` to `cursor`. Another epoch starts the others over.
    pub fn advance(&mut self, index: usize, cursor: pb::Cursor) {
        if self.epoch != Some(cursor.epoch) {
            if self.epoch.is_some() {
                self.offsets.iter_mut().for_each(|o| *o = None);
            }
            self.epoch = Some(cursor.epoch);
        }
        if let Some(o) = self.offsets.get_mut(index) {
            *o = Some(cursor.offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written() {
        let mut p = Position::new(2);
        assert_eq!(p.encode(), None, "nothing to resume from yet");
        p.advance(
            0,
            pb::Cursor {
                epoch: 77,
                offset: 3_000_000_000,
            },
        );
        let text = p.encode().unwrap();
        assert_eq!(text, "77.3000000000.-");
        assert_eq!(Position::parse(&text, 2).unwrap(), p);
        let topics = ["a".to_owned(), "b".to_owned()];
        let resume: Vec<_> = p.resume(&topics).collect();
        assert_eq!(
            resume,
            [(
                &topics[0],
                pb::Cursor {
                    epoch: 77,
                    offset: 3_000_000_000
                }
            )]
        );
        p.advance(
            1,
            pb::Cursor {
                epoch: 78,
                offset: 5,
            },
        );
        assert_eq!(
            p.encode().unwrap(),
            "78.-.5",
            "a new epoch forgets the old offsets"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "77",
            "77.",
            "77.1",
            "77.1.2.3",
            "x.1.2",
            "77.+1.2",
            "77.01.2",
            "-1.1.2",
            "77.1.18446744073709551616",
            "77 .1.2",
        ] {
            assert_eq!(
                Position::parse(bad, 2),
                Err(CursorError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            Position::parse(&"1".repeat(MAX_LEN + 1), 2),
            Err(CursorError::TooLong)
        );
    }
}
