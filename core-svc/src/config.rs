//! Configuration: every flag also reads the environment variable beside it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use logi::jwt_args::JwtArgs;

use crate::dispatch::DispatchConfig;
use crate::tariff::{TariffSpec, Tariffs};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "core-svc",
    version,
    about = "Logi realtime core: bookings, dispatch, OTPs, locations and events over gRPC"
)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "LOGI_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Address to serve Prometheus metrics on (GET /metrics), or `off`.
    #[arg(long, env = "LOGI_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,

    /// SQLite database file, created with its folder on first start; or a
    /// PostgreSQL URL (postgres://user@host:5432/db) for a cluster of replicas.
    #[arg(long, env = "LOGI_DATABASE", default_value = "data/logi.db")]
    pub database: String,

    /// NATS server the replicas of a cluster tell each other their commits and
    /// drivers' positions through (nats://127.0.0.1:4222); none on a single node.
    /// Needs a PostgreSQL --database, which the replicas share.
    #[arg(long, env = "LOGI_NATS_URL")]
    pub nats_url: Option<String>,

    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Tariffs as NAME=BASE+PER_KM (repeat, or comma-separate in the variable);
    /// default bike=1.00+0.50, car=2.50+1.20, van=4.00+1.80, truck=8.00+3.00.
    #[arg(long = "tariff", env = "LOGI_TARIFFS", value_delimiter = ',')]
    pub tariffs: Vec<TariffSpec>,

    /// Drivers offered a booking per dispatch round.
    #[arg(long, env = "LOGI_DISPATCH_DRIVERS", default_value_t = 5)]
    pub dispatch_drivers: usize,

    /// First dispatch search radius in metres.
    #[arg(long, env = "LOGI_DISPATCH_RADIUS_M", default_value_t = 3_000.0)]
    pub dispatch_radius_m: f64,

    /// Widest dispatch search radius in metres; the radius doubles each round.
    #[arg(long, env = "LOGI_DISPATCH_MAX_RADIUS_M", default_value_t = 12_000.0)]
    pub dispatch_max_radius_m: f64,

    /// Time between dispatch rounds, e.g. 20s.
    #[arg(long, env = "LOGI_DISPATCH_WIDEN_EVERY", default_value = "20s", value_parser = humantime::parse_duration)]
    pub dispatch_widen_every: Duration,

    /// A booking nobody accepts within this time expires, e.g. 120s.
    #[arg(long, env = "LOGI_OFFER_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub offer_timeout: Duration,

    /// How long a replica's hold on a pending booking's dispatch lasts unrenewed:
    /// when a replica dies, another takes its bookings over within this and a
    /// third. E.g. 10s.
    #[arg(long, env = "LOGI_DISPATCH_LEASE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub dispatch_lease: Duration,

    /// Durable events older than this are removed; resuming from before them needs
    /// a re-sync. E.g. 7d.
    #[arg(long, env = "LOGI_EVENT_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub event_retention: Duration,

    /// Events queued per subscriber before it is cut off with RESOURCE_EXHAUSTED.
    #[arg(long, env = "LOGI_SUBSCRIBER_QUEUE", default_value_t = 1024)]
    pub subscriber_queue: usize,

    /// An available driver whose positions stop for longer than this leaves
    /// dispatch (its open offers close, admins hear it as Offline) until its next
    /// position, e.g. 30s.
    #[arg(long, env = "LOGI_DRIVER_STALE_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub driver_stale_after: Duration,

    /// Events an edge's attachment may have waiting (queued or held while topics
    /// start) before it is cut off with RESOURCE_EXHAUSTED and attaches again.
    #[arg(long, env = "LOGI_ATTACHMENT_QUEUE", default_value_t = 65_536)]
    pub attachment_queue: usize,

    /// Subscribe streams one principal may hold open at once (`service` callers,
    /// the edges, are not counted); one more is answered RESOURCE_EXHAUSTED.
    #[arg(long, env = "LOGI_MAX_STREAMS_PER_PRINCIPAL", default_value_t = 16)]
    pub max_streams_per_principal: usize,

    /// HTTP/2 streams one connection may have open at once. An edge today holds
    /// one Subscribe stream per connected app on one connection.
    #[arg(long, env = "LOGI_MAX_CONCURRENT_STREAMS", default_value_t = 65_536)]
    pub max_concurrent_streams: u32,

    /// How long shutdown waits for open calls to finish, e.g. 10s.
    #[arg(long, env = "LOGI_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Config {
    /// Checks what clap cannot; the message is one line naming the setting.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), String> {
        self.jwt.verifier()?;
        self.metrics_addr()?;
        if self.database.is_empty() {
            return Err(
                "LOGI_DATABASE is empty: give a SQLite file path or a postgres:// URL".into(),
            );
        }
        if self.is_postgres() && self.database.parse::<tokio_postgres::Config>().is_err() {
            return Err(format!(
                "LOGI_DATABASE {} is not a PostgreSQL URL: write postgres://user@host:5432/database",
                self.database_shown()
            ));
        }
        if self.nats_url.is_some() && !self.is_postgres() {
            return Err(
                "LOGI_NATS_URL is for a cluster, whose replicas share a PostgreSQL database: set LOGI_DATABASE to a postgres:// URL, or unset LOGI_NATS_URL"
                    .into(),
            );
        }
        if !(1..=100).contains(&self.dispatch_drivers) {
            return Err("LOGI_DISPATCH_DRIVERS must be from 1 to 100".into());
        }
        let radius = self.dispatch_radius_m;
        if !(radius.is_finite() && radius > 0.0) {
            return Err("LOGI_DISPATCH_RADIUS_M must be a positive number of metres".into());
        }
        if !(self.dispatch_max_radius_m.is_finite() && self.dispatch_max_radius_m >= radius) {
            return Err(
                "LOGI_DISPATCH_MAX_RADIUS_M must be at least LOGI_DISPATCH_RADIUS_M".into(),
            );
        }
        if self.dispatch_lease < Duration::from_millis(300) {
            return Err("LOGI_DISPATCH_LEASE must be at least 300ms".into());
        }
        if self.dispatch_widen_every.is_zero() || self.offer_timeout.is_zero() {
            return Err(
                "LOGI_DISPATCH_WIDEN_EVERY and LOGI_OFFER_TIMEOUT must be more than 0".into(),
            );
        }
        if self.max_streams_per_principal == 0 || self.max_concurrent_streams == 0 {
            return Err(
                "LOGI_MAX_STREAMS_PER_PRINCIPAL and LOGI_MAX_CONCURRENT_STREAMS must be at least 1"
                    .into(),
            );
        }
        if self.attachment_queue == 0 {
            return Err("LOGI_ATTACHMENT_QUEUE must be at least 1".into());
        }
        if self.driver_stale_after.is_zero() {
            return Err("LOGI_DRIVER_STALE_AFTER must be more than 0".into());
        }
        if self.subscriber_queue == 0 {
            return Err("LOGI_SUBSCRIBER_QUEUE must be at least 1".into());
        }
        Ok(())
    }

    /// Where to serve metrics; `None` for `off`.
    ///
    /// # Errors
    /// A one-line message when `--metrics-addr` is neither an address nor `off`.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.metrics_addr.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.metrics_addr.parse().map(Some).map_err(|_| {
            format!(
                "LOGI_METRICS_ADDR {:?} is not an address: write host:port (127.0.0.1:9464), or off",
                self.metrics_addr
            )
        })
    }

    /// Whether `--database` names a PostgreSQL server rather than a SQLite file.
    pub fn is_postgres(&self) -> bool {
        self.database.starts_with("postgres://") || self.database.starts_with("postgresql://")
    }

    /// `--database` as it may be logged: a URL's password left out.
    pub fn database_shown(&self) -> String {
        if self.is_postgres() {
            crate::store::postgres::without_password(&self.database)
        } else {
            self.database.clone()
        }
    }

    pub fn database_path(&self) -> PathBuf {
        PathBuf::from(&self.database)
    }

    pub fn tariffs(&self) -> Tariffs {
        Tariffs::from_specs(&self.tariffs)
    }

    pub fn dispatch(&self) -> DispatchConfig {
        DispatchConfig {
            drivers: self.dispatch_drivers,
            radius_m: self.dispatch_radius_m,
            max_radius_m: self.dispatch_max_radius_m,
            widen_every: self.dispatch_widen_every,
            offer_timeout: self.offer_timeout,
            lease: self.dispatch_lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("core-svc").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(&["--jwt-secret", SECRET]);
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.database, "data/logi.db");
        assert_eq!(
            c.metrics_addr(),
            Ok(Some("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(c.dispatch(), DispatchConfig::default());
        assert_eq!(c.tariffs(), Tariffs::default());
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn bad_configuration_says_what_to_set() {
        let err = parse(&[]).validate().unwrap_err();
        assert!(
            err.contains("LOGI_JWT_SECRET") && err.contains("LOGI_JWT_PUBLIC_KEY"),
            "{err}"
        );
        assert!(
            parse(&["--jwt-secret", "short"])
                .validate()
                .unwrap_err()
                .contains("at least 32")
        );
        let pg = parse(&["--jwt-secret", SECRET, "--database", "postgres://x"]);
        assert!(pg.is_postgres());
        assert_eq!(pg.validate(), Ok(()));
        let bad = parse(&[
            "--jwt-secret",
            SECRET,
            "--database",
            "postgres://u:secret@h:x/d",
        ])
        .validate()
        .unwrap_err();
        assert!(
            bad.contains("not a PostgreSQL URL") && !bad.contains("secret"),
            "{bad}"
        );
        let radius = parse(&["--jwt-secret", SECRET, "--dispatch-max-radius-m", "10"])
            .validate()
            .unwrap_err();
        assert!(radius.contains("LOGI_DISPATCH_MAX_RADIUS_M"), "{radius}");
        assert!(Config::try_parse_from(["core-svc", "--tariff", "car"]).is_err());
        let off = parse(&["--jwt-secret", SECRET, "--metrics-addr", "off"]);
        assert_eq!(off.metrics_addr(), Ok(None));
        let bad = parse(&["--jwt-secret", SECRET, "--metrics-addr", "localhost"])
            .validate()
            .unwrap_err();
        assert_eq!(
            bad,
            r#"LOGI_METRICS_ADDR "localhost" is not an address: write host:port (127.0.0.1:9464), or off"#
        );
    }
}
