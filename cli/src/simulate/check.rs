//! `--check`: did every rider's socket show each of its bookings' lifecycle, in
//! order? A pure function of what the RPCs confirmed and what the sockets showed.
//!
//! The lifecycle (`pending → accepted → on_trip → completed`, `cancelled` from
//! pending or accepted, `expired` from pending) is a small graph; a rider's frames
//! must walk it one edge at a time from `pending`, include every status an RPC
//! answer confirmed, and show the OTP before `on_trip`. A booking may end the run
//! still in progress.

use std::fmt;

/// A booking's status as the riders' frames name it (both dialects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Accepted,
    OnTrip,
    Completed,
    Cancelled,
    Expired,
}

impl Status {
    /// The statuses that may follow this one.
    fn next(this: Option<Self>) -> &'static [Self] {
        use Status::*;
        match this {
            None => &[Pending],
            Some(Pending) => &[Accepted, Cancelled, Expired],
            Some(Accepted) => &[OnTrip, Cancelled],
            Some(OnTrip) => &[Completed],
            Some(Completed | Cancelled | Expired) => &[],
        }
    }

    pub fn is_final(self) -> bool {
        Self::next(Some(self)).is_empty()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::OnTrip => "on_trip",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        })
    }
}

/// What a rider's socket showed of one booking, in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Status(Status),
    Otp,
}

/// One booking of the run: whose it is, what RPC answers confirmed happened to
/// it, and what its rider's socket showed.
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    pub booking: u64,
    pub rider: &'a str,
    pub confirmed: &'a [Status],
    pub seen: &'a [Seen],
}

/// Something a rider missed, or saw in the wrong order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub booking: u64,
    pub rider: String,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "booking {} (rider {}): {}",
            self.booking, self.rider, self.what
        )
    }
}

/// The statuses strictly between `from` and `to` on the shortest walk of the
/// lifecycle, if `to` can be reached from `from` at all.
fn between(from: Option<Status>, to: Status) -> Option<Vec<Status>> {
    // Breadth-first over at most six statuses: each path is short.
    let mut paths: Vec<Vec<Status>> = Status::next(from).iter().map(|s| vec![*s]).collect();
    while !paths.is_empty() {
        if let Some(p) = paths.iter().find(|p| p.last() == Some(&to)) {
            return Some(p[..p.len() - 1].to_vec());
        }
        paths = paths
            .iter()
            .flat_map(|p| {
                Status::next(p.last().copied()).iter().map(move |s| {
                    let mut longer = p.clone();
                    longer.push(*s);
                    longer
                })
            })
            .collect();
    }
    None
}

/// Every problem of every booking, in the order of `traces`.
pub fn check(traces: &[Trace<'_>]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for t in traces {
        let mut say = |what: String| {
            problems.push(Problem {
                booking: t.booking,
                rider: t.rider.to_owned(),
                what,
            })
        };
        let mut last: Option<Status> = None;
        let mut otp = false;
        let mut missed = Vec::new();
        for seen in t.seen {
            let next = match *seen {
                Seen::Otp => {
                    otp = true;
                    continue;
                }
                Seen::Status(s) => s,
            };
            let name = |s: Option<Status>| s.map_or("the start".to_owned(), |s| s.to_string());
            if last == Some(next) {
                say(format!("{next} shown twice"));
                continue;
            }
            if !Status::next(last).contains(&next) {
                match between(last, next) {
                    Some(skipped) => {
                        let list: Vec<String> = skipped.iter().map(Status::to_string).collect();
                        say(format!(
                            "missed {} between {} and {next}",
                            list.join(", "),
                            name(last)
                        ));
                        missed.extend(skipped);
                    }
                    None => say(format!("{next} after {}: out of order", name(last))),
                }
            }
            if next == Status::OnTrip && !otp {
                say("on_trip before any OTP".to_owned());
            }
            last = Some(next);
        }
        for c in t.confirmed {
            let shown = t.seen.contains(&Seen::Status(*c));
            if !shown && !missed.contains(c) {
                say(format!("never shown {c}, which its RPC confirmed"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::Seen::Otp;
    use super::Status::*;
    use super::*;

    fn s(status: Status) -> Seen {
        Seen::Status(status)
    }

    fn problems(confirmed: &[Status], seen: &[Seen]) -> Vec<String> {
        check(&[Trace {
            booking: 7,
            rider: "sim-r1",
            confirmed,
            seen,
        }])
        .into_iter()
        .map(|p| p.to_string())
        .collect()
    }

    #[test]
    fn whole_lifecycles_and_runs_ending_midway_pass() {
        let trip = [Pending, Accepted, OnTrip, Completed];
        let all = [s(Pending), s(Accepted), Otp, s(OnTrip), s(Completed)];
        assert!(problems(&trip, &all).is_empty());
        // The OTP may come before the accepted frame: same transaction.
        let otp_first = [s(Pending), Otp, s(Accepted), s(OnTrip), s(Completed)];
        assert!(problems(&trip, &otp_first).is_empty());
        assert!(problems(&[Pending, Accepted], &all[..3]).is_empty());
        assert!(problems(&[Pending], &[s(Pending), s(Expired)]).is_empty());
        assert!(problems(&[Pending, Cancelled], &[s(Pending), s(Cancelled)]).is_empty());
        let late_cancel = [s(Pending), s(Accepted), Otp, s(Cancelled)];
        assert!(problems(&[Pending, Accepted, Cancelled], &late_cancel).is_empty());
    }

    #[test]
    fn a_missed_transition_is_reported() {
        let trip = [Pending, Accepted, OnTrip, Completed];
        assert_eq!(
            problems(&trip, &[s(Pending), Otp, s(OnTrip), s(Completed)]),
            ["booking 7 (rider sim-r1): missed accepted between pending and on_trip"]
        );
        assert_eq!(
            problems(&[Pending, Accepted], &[s(Pending)]),
            ["booking 7 (rider sim-r1): never shown accepted, which its RPC confirmed"]
        );
        assert_eq!(
            problems(&[Pending], &[]),
            ["booking 7 (rider sim-r1): never shown pending, which its RPC confirmed"]
        );
        assert_eq!(
            problems(&[Pending, Accepted], &[s(Accepted)]),
            ["booking 7 (rider sim-r1): missed pending between the start and accepted"]
        );
    }

    #[test]
    fn out_of_order_repeats_and_a_late_otp_are_reported() {
        let trip = [Pending, Accepted, OnTrip, Completed];
        assert_eq!(
            problems(
                &trip,
                &[s(Pending), s(Accepted), Otp, s(Completed), s(OnTrip)]
            ),
            [
                "booking 7 (rider sim-r1): missed on_trip between accepted and completed",
                "booking 7 (rider sim-r1): on_trip after completed: out of order",
            ]
        );
        assert_eq!(
            problems(
                &trip,
                &[s(Pending), s(Accepted), s(OnTrip), Otp, s(Completed)]
            ),
            ["booking 7 (rider sim-r1): on_trip before any OTP"]
        );
        assert_eq!(
            problems(&[Pending], &[s(Pending), s(Pending)]),
            ["booking 7 (rider sim-r1): pending shown twice"]
        );
        assert_eq!(
            problems(
                &[Pending, Cancelled],
                &[s(Pending), s(Cancelled), s(Accepted)]
            ),
            ["booking 7 (rider sim-r1): accepted after cancelled: out of order"]
        );
    }
}
