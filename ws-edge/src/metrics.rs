//! The edge's metrics, served at `/metrics` in the Prometheus text format.
//!
//! [`Metrics`] holds a handle per label set, made once at start, and is shared by
//! the accept loop, the handshake, the sessions and the attachments (an
//! `Arc<Metrics>` in each, not a global). On the fan-out path nothing is counted
//! per frame per app: the registry adds a group's frames once per event, and an
//! outbox reports its backlog only when a write leaves frames behind or its
//! session's stall timer arms or fires (a socket that takes nothing finishes no
//! write). Handshakes are requests with `Upgrade: websocket`; plain requests to
//! the same routes are counted apart ([`Plain`]). What can be
//! read when scraped (attachments up, topics watched) is read then, by
//! [`State`].

use std::sync::Arc;

use logi::auth::Role;
use logi::metrics::{gauge, handles};
use logi::pb::event::Kind;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::attach::Attachments;
use crate::route::{ChannelsRoute, Dialect, Route};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AppLabels {
    route: &'static str,
    dialect: &'static str,
    role: &'static str,
}

/// How a handshake (a request with `Upgrade: websocket`, or a connection whose
/// head was never read) ended: the HTTP status it got, or the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Upgraded,
    Unauthorized,
    Forbidden,
    NotFound,
    TooMany,
    HeadTooLarge,
    Unavailable,
    Timeout,
}

const HANDSHAKES: [&str; 8] = ["101", "401", "403", "404", "429", "431", "503", "timeout"];

impl Handshake {
    /// The outcome of a refusal with `status`, if it is one counted.
    pub fn of_status(status: u16) -> Option<Self> {
        Some(match status {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            429 => Self::TooMany,
            431 => Self::HeadTooLarge,
            503 => Self::Unavailable,
            _ => return None,
        })
    }
}

/// What a plain request (no `Upgrade: websocket`) to a WebSocket route or an
/// unknown path, or any plain request at the connection limit, was answered: a
/// page's preflight, a browser's `/favicon.ico`, a scanner. Not a handshake, so an
/// alert on refused apps does not fire on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    Unauthorized,
    Forbidden,
    NotFound,
    /// The token may connect, but this is not a WebSocket.
    UpgradeRequired,
    Unavailable,
}

const PLAINS: [&str; 5] = ["401", "403", "404", "426", "503"];

impl Plain {
    /// The outcome of a refusal with `status`, if it is one counted.
    pub fn of_status(status: u16) -> Option<Self> {
        Some(match status {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            426 => Self::UpgradeRequired,
            503 => Self::Unavailable,
            _ => return None,
        })
    }
}

/// What a frame to an app is, by the event it shows (the same in both dialects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    BookingChanged,
    OtpIssued,
    BookingOffered,
    OfferClosed,
    DriverLocation,
    DriverStatus,
    /// Any driver's position, to the fleet's admins.
    DriverPosition,
    Snapshot,
    Resync,
    Error,
}

const FRAME_TYPES: [&str; 10] = [
    "booking_changed",
    "otp_issued",
    "booking_offered",
    "offer_closed",
    "driver_location",
    "driver_status",
    "driver_position",
    "snapshot",
    "resync",
    "error",
];

impl FrameType {
    pub fn of(kind: &Kind) -> Self {
        match kind {
            Kind::BookingChanged(_) => Self::BookingChanged,
            Kind::OtpIssued(_) => Self::OtpIssued,
            Kind::BookingOffered(_) => Self::BookingOffered,
            Kind::OfferClosed(_) => Self::OfferClosed,
            Kind::DriverLocation(_) => Self::DriverLocation,
            Kind::DriverStatus(_) => Self::DriverStatus,
            Kind::DriverPosition(_) => Self::DriverPosition,
            Kind::Snapshot(_) | Kind::StreamHead(_) => Self::Snapshot,
            Kind::ResyncRequired(_) => Self::Resync,
        }
    }
}

/// What became of a frame an app sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// A driver's position, on its way to core-svc.
    Location,
    /// Malformed, unknown, binary or not allowed: answered with an `error` frame.
    Error,
}

/// Why an app was closed with 1013.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slow {
    /// Its inbox (frames from the attachments) overflowed.
    Inbox,
    /// Its outbox (frames for the socket) was full.
    Outbox,
}

pub struct Metrics {
    handshakes: [Counter; 8],
    plain: [Counter; 5],
    frames_out: [Counter; 10],
    inbound: [Counter; 2],
    slow: [Counter; 2],
    closes: Family<CodeLabel, Counter>,
    connected: Family<AppLabels, Gauge>,
    /// Frames waiting in the outboxes after their last write, or as they wait.
    pub outbox_backlog: Gauge,
    /// Attach streams that ended (broke, were refused or cut off).
    pub attachment_breaks: Counter,
}

impl Default for Metrics {
    /// Metrics on a registry of their own, for tests that do not scrape.
    fn default() -> Self {
        Self::new(&mut Registry::default())
    }
}

impl Metrics {
    /// Registers the edge's metrics on `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let handshakes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "logi_ws_handshakes",
            "WebSocket handshakes (requests with Upgrade: websocket) by outcome: the HTTP status answered, or, for a connection, timeout (no complete request head in time) or 431",
            handshakes.clone(),
        );
        let plain = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "logi_ws_plain_requests",
            "Plain HTTP requests (no Upgrade: websocket) to the WebSocket routes or unknown paths, or at the connection limit, by the status answered (426: a good token, not a WebSocket)",
            plain.clone(),
        );
        let frames = Family::<TypeLabel, Counter>::default();
        registry.register(
            "logi_ws_frames_sent",
            "Frames queued to apps, by the event they show",
            frames.clone(),
        );
        let inbound = Family::<ResultLabel, Counter>::default();
        registry.register(
            "logi_ws_frames_received",
            "Text and binary frames apps sent, by result: location (a position relayed) or error (answered with an error frame)",
            inbound.clone(),
        );
        let slow = Family::<QueueLabel, Counter>::default();
        registry.register(
            "logi_ws_slow_closes",
            "Apps closed with 1013 for not reading fast enough, by the queue that overflowed",
            slow.clone(),
        );
        let closes = Family::<CodeLabel, Counter>::default();
        registry.register(
            "logi_ws_closes",
            "WebSocket connections ended, by the close code the edge sent (none: the app went away or stalled)",
            closes.clone(),
        );
        let connected = Family::<AppLabels, Gauge>::default();
        registry.register(
            "logi_ws_connections",
            "Apps connected now, by route, dialect and role",
            connected.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "logi_ws_outbox_backlog_frames",
            "Frames waiting in apps' outboxes after their last write to the socket, or while the socket takes nothing (apps falling behind)",
            outbox_backlog.clone(),
        );
        let attachment_breaks = Counter::default();
        registry.register(
            "logi_ws_attachment_breaks",
            "Attach streams to core-svc that ended and were made again",
            attachment_breaks.clone(),
        );
        Self {
            handshakes: handles(
                &handshakes,
                HANDSHAKES.map(|outcome| OutcomeLabel { outcome }),
            ),
            plain: handles(&plain, PLAINS.map(|outcome| OutcomeLabel { outcome })),
            frames_out: handles(&frames, FRAME_TYPES.map(|r#type| TypeLabel { r#type })),
            inbound: handles(
                &inbound,
                ["location", "error"].map(|result| ResultLabel { result }),
            ),
            slow: handles(&slow, ["inbox", "outbox"].map(|queue| QueueLabel { queue })),
            closes,
            connected,
            outbox_backlog,
            attachment_breaks,
        }
    }

    pub fn handshake(&self, outcome: Handshake) {
        self.handshakes[outcome as usize].inc();
    }

    pub fn plain(&self, outcome: Plain) {
        self.plain[outcome as usize].inc();
    }

    /// A request answered `status`: a handshake's outcome if it asked for an
    /// upgrade, else a plain request's.
    pub fn answered(&self, upgrade: bool, status: u16) {
        if upgrade {
            if let Some(outcome) = Handshake::of_status(status) {
                self.handshake(outcome);
            }
        } else if let Some(outcome) = Plain::of_status(status) {
            self.plain(outcome);
        }
    }

    /// `n` frames of `kind` were queued to apps.
    pub fn frames_sent(&self, kind: FrameType, n: usize) {
        self.frames_out[kind as usize].inc_by(n as u64);
    }

    pub fn received(&self, what: Inbound) {
        self.inbound[what as usize].inc();
    }

    pub fn slow(&self, queue: Slow) {
        self.slow[queue as usize].inc();
    }

    /// A connection ended with `code` sent (None: none could be).
    pub fn closed(&self, code: Option<u16>) {
        let code = match code {
            None => "none",
            Some(1000) => "1000",
            Some(1001) => "1001",
            Some(1009) => "1009",
            Some(1011) => "1011",
            Some(1012) => "1012",
            Some(1013) => "1013",
            Some(4001) => "4001",
            Some(4002) => "4002",
            Some(_) => "other",
        };
        self.closes.get_or_create(&CodeLabel { code }).inc();
    }

    /// Counts an app as connected until the returned guard is dropped.
    pub fn connected(&self, route: Route, role: Role) -> Connected {
        let (route, dialect) = match route.dialect {
            Dialect::Channels(ChannelsRoute::UserBookings) => {
                ("/regular_user/ws/bookings/", "channels")
            }
            Dialect::Channels(ChannelsRoute::DriverAvailable) => {
                ("/driver/ws/available_bookings/", "channels")
            }
            Dialect::Channels(ChannelsRoute::DriverBookings) => {
                ("/driver/ws/bookings/", "channels")
            }
            Dialect::Logi => ("/ws", "logi"),
        };
        let gauge = self.connected.get_or_create_owned(&AppLabels {
            route,
            dialect,
            role: role.as_str(),
        });
        gauge.inc();
        Connected(gauge)
    }
}

/// An app counted in `logi_ws_connections` while this lives.
pub struct Connected(Gauge);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What is read at each scrape: the attachments' state and the topics they watch.
#[derive(Debug)]
pub struct State(pub Arc<Attachments>);

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (up, topics) = self.0.state();
        let total = self.0.len();
        gauge(
            &mut encoder,
            "logi_ws_attachments_up",
            "Attach streams to core-svc that are up",
            up as i64,
        )?;
        gauge(
            &mut encoder,
            "logi_ws_attachments_down",
            "Attach streams to core-svc that are connecting or down",
            (total - up) as i64,
        )?;
        gauge(
            &mut encoder,
            "logi_ws_watched_topics",
            "Topics the edge's attachments watch for its apps",
            topics as i64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_under_their_labels() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.handshake(Handshake::of_status(401).unwrap());
        m.handshake(Handshake::Upgraded);
        m.plain(Plain::of_status(426).unwrap());
        m.frames_sent(FrameType::DriverLocation, 3);
        m.closed(Some(4001));
        m.closed(None);
        let app = m.connected(
            Route {
                dialect: Dialect::Logi,
                fleet: true,
            },
            Role::Admin,
        );
        let text = logi::metrics::encode(&registry);
        for line in [
            "logi_ws_handshakes_total{outcome=\"401\"} 1",
            "logi_ws_handshakes_total{outcome=\"101\"} 1",
            "logi_ws_handshakes_total{outcome=\"timeout\"} 0",
            "logi_ws_plain_requests_total{outcome=\"426\"} 1",
            "logi_ws_plain_requests_total{outcome=\"401\"} 0",
            "logi_ws_frames_sent_total{type=\"driver_location\"} 3",
            "logi_ws_closes_total{code=\"4001\"} 1",
            "logi_ws_closes_total{code=\"none\"} 1",
            "logi_ws_connections{route=\"/ws\",dialect=\"logi\",role=\"admin\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        drop(app);
        let text = logi::metrics::encode(&registry);
        assert!(
            text.lines().any(
                |l| l == "logi_ws_connections{route=\"/ws\",dialect=\"logi\",role=\"admin\"} 0"
            ),
            "{text}"
        );
    }
}
