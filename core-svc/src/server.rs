//! Wires the pieces together and serves gRPC, and metrics beside it, until
//! shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use logi::pb::booking_service_server::BookingServiceServer;
use logi::pb::event_service_server::EventServiceServer;
use logi::pb::location_service_server::LocationServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::api::{self, BookingApi, Core, EventApi, LocationApi};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::dispatch::{Dispatcher, Schedule};
use crate::drivers::Registry;
use crate::error::Error;
use crate::hub::{Hub, Order, fill};
use crate::live::Live;
use crate::liveness;
use crate::metrics::{self, Metrics};
use crate::store::postgres::Postgres;
use crate::store::sqlite::Sqlite;
use crate::store::{CommitSink, Store};

/// How often the database and NATS are checked for health.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Cancelled-before-accepted streams h2 tolerates at once on one connection.
const MAX_PENDING_ACCEPT_RESETS: usize = 16_384;
/// Calls one connection may have in flight (a stream counts until it is answered):
/// an edge forwards every app's calls over one connection, so this is generous.
const MAX_CALLS_PER_CONNECTION: usize = 4096;
/// The names health reports on: the server as a whole, then each service.
const SERVICES: [&str; 4] = [
    "",
    "logi.v1.BookingService",
    "logi.v1.LocationService",
    "logi.v1.EventService",
];

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Storage(#[from] Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Why [`Listeners::bind`] could not bind: one line naming the address and its
/// variable, the socket's error kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{0}")]
    Address(String),
    #[error("cannot listen on {addr} (LOGI_GRPC_ADDR)")]
    Grpc {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr} (LOGI_METRICS_ADDR)")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The sockets core-svc serves on, bound before [`run`] so that a port taken
/// is said at once (and a test can bind port 0 and know where it is).
pub struct Listeners {
    pub grpc: TcpListener,
    /// `None` with `--metrics-addr off`.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `--grpc-addr` and `--metrics-addr`.
    ///
    /// # Errors
    /// [`BindError`]: `--metrics-addr` is not an address, or an address cannot
    /// be bound.
    pub async fn bind(config: &Config) -> Result<Self, BindError> {
        let addr = config.grpc_addr;
        let grpc = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError::Grpc { addr, source })?;
        let metrics = match config.metrics_addr().map_err(BindError::Address)? {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| BindError::Metrics { addr, source })?,
            ),
        };
        Ok(Self { grpc, metrics })
    }
}

/// Serves core-svc on `listeners` until `shutdown` is cancelled, then ends open
/// streams, stops background tasks and waits up to the configured grace period for
/// calls in flight.
///
/// # Errors
/// [`ServeError`] for bad configuration, a database that cannot be opened, or a
/// failing transport.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let Listeners {
        grpc: listener,
        metrics: metrics_listener,
    } = listeners;
    let verifier = Arc::new(config.jwt.verifier().map_err(ServeError::Config)?);
    let registry = Arc::new(Registry::default());
    let mut metric_registry = logi::metrics::registry();
    let metrics = Arc::new(Metrics::new(&mut metric_registry));
    metric_registry.register_collector(Box::new(metrics::Drivers(registry.clone())));
    let schedule = Schedule::new(config.dispatch());
    // This replica, among the others of a cluster: its leases and messages carry it.
    let replica = rand::random_range(1..(1u64 << 62));
    let (store, live) = open_store(&config, &registry, &schedule, &metrics).await?;
    let hub = live.hub.clone();
    let tasks = TaskTracker::new();
    // Hearing the other replicas first: a commit of theirs made while this one
    // reads its start is then applied, not missed (driver changes by version).
    let cluster = match &config.nats_url {
        Some(url) => {
            let cluster = Cluster::connect(url, store.epoch(), replica).await?;
            live.cluster.set(cluster.clone()).expect("connected once");
            cluster
                .start(live.clone(), store.clone(), &tasks, shutdown.clone())
                .await?;
            Some(cluster)
        }
        None => None,
    };
    for saved in store.drivers().await? {
        registry.restore(&saved.driver, saved.location, saved.unseen);
    }
    let dispatcher = Dispatcher::new(
        config.dispatch(),
        replica,
        schedule,
        store.clone(),
        registry.clone(),
    );
    let pending = dispatcher.lease().await?;
    tracing::info!(
        database = %config.database_shown(),
        epoch = store.epoch(),
        pending,
        addr = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
        metrics = %metrics_listener.as_ref().and_then(|l| l.local_addr().ok()).map_or_else(|| "off".into(), |a| a.to_string()),
        "core-svc ready"
    );
    if let Some(listener) = metrics_listener {
        tasks.spawn(metrics::serve(
            listener,
            Arc::new(metric_registry),
            shutdown.clone(),
        ));
    }

    if hub.order() == Order::Sequenced {
        tasks.spawn(fill::run(hub.clone(), store.clone(), shutdown.clone()));
    }
    tasks.spawn(dispatcher.clone().run(shutdown.clone()));
    tasks.spawn(liveness::run(
        registry.clone(),
        store.clone(),
        config.driver_stale_after,
        shutdown.clone(),
    ));
    tasks.spawn(prune(
        store.clone(),
        config.event_retention,
        shutdown.clone(),
    ));

    let core = Arc::new(Core {
        store,
        hub: hub.clone(),
        registry,
        dispatcher,
        tariffs: config.tariffs(),
        shutdown: shutdown.clone(),
        streams: logi::caps::Caps::new(config.max_streams_per_principal),
        attachment_queue: config.attachment_queue,
        cluster,
        metrics: metrics.clone(),
    });
    let auth = api::authenticator(verifier);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<BookingServiceServer<BookingApi>>()
        .await;
    health
        .set_serving::<LocationServiceServer<LocationApi>>()
        .await;
    health.set_serving::<EventServiceServer<EventApi>>().await;
    // Both reflection versions, each knowing the health service too, so every grpcurl
    // version can list and call everything without .proto files.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(logi::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Config(e.to_string()))?;

    tasks.spawn(watch_health(
        core.store.clone(),
        core.cluster.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let stopping = {
        let (shutdown, hub, health) = (shutdown.clone(), hub.clone(), health.clone());
        async move {
            shutdown.cancelled().await;
            tracing::info!("shutting down: ending open streams");
            // Every service and the server as a whole (""), which balancers and the
            // edges' /readyz check: no new work should come here from now on.
            for service in SERVICES {
                health
                    .set_service_status(service, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            hub.close();
        }
    };
    let serve = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // A ws-edge carries a Subscribe stream per app in recover mode on one HTTP/2
        // connection (and any client may carry many). When this server restarts
        // under thousands of them, every edge resubscribes them all at once, and
        // apps that leave meanwhile cancel streams this server has not taken up yet. Past this many such
        // cancellations pending at once, h2 ends the whole connection (its guard
        // against "rapid reset" floods; its default is 20), cutting off every other
        // app on that edge. Still a bound, and core-svc is not exposed to the
        // internet.
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .max_concurrent_streams(config.max_concurrent_streams)
        // No server-wide timeout: it would also end GPS client streams, which are
        // answered only when they end. Unary calls are bounded by the store's own
        // waits (a queue and a commit deadline) and by the caller's grpc-timeout.
        .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
        .trace_fn(|req| tracing::info_span!("rpc", path = %req.uri().path()))
        // Around every service, health and reflection included: one place counts
        // and times every call.
        .layer(metrics::rpc::RpcLayer(metrics.rpcs.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(BookingServiceServer::with_interceptor(
            BookingApi(core.clone()),
            auth.clone(),
        ))
        .add_service(LocationServiceServer::with_interceptor(
            LocationApi(core.clone()),
            auth.clone(),
        ))
        .add_service(EventServiceServer::with_interceptor(
            EventApi(core.clone()),
            auth,
        ))
        // Server::tcp_nodelay is ignored for a listener of our own: set it on each
        // connection here. Without it, Nagle's algorithm held back small frames
        // behind an unacknowledged one (waiting for a delayed ACK), which put about
        // 10 ms on the median event from 2,000 events a second on one connection.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stopping,
        );
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    let served = tokio::select! {
        served = serve => served,
        () = grace_over => {
            tracing::warn!("grace period over: dropping the calls still open");
            Ok(())
        }
    };
    tasks.close();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop in time");
    }
    tracing::info!("core-svc stopped");
    Ok(served?)
}

/// Opens the store `--database` names (a `postgres://` URL or a SQLite file) with
/// the hub its commits feed: in commit order from SQLite's one writer, sequenced
/// from PostgreSQL's many connections.
async fn open_store(
    config: &Config,
    registry: &Arc<Registry>,
    schedule: &Arc<Schedule>,
    metrics: &Arc<Metrics>,
) -> Result<(Arc<dyn Store>, Arc<Live>), Error> {
    let mut live_slot = None;
    let order = if config.is_postgres() {
        Order::Sequenced
    } else {
        Order::Committed
    };
    let sink = |epoch| {
        let live = Arc::new(Live {
            hub: Hub::with_order(epoch, config.subscriber_queue, order),
            registry: registry.clone(),
            schedule: schedule.clone(),
            cluster: OnceLock::new(),
            metrics: metrics.clone(),
        });
        live_slot = Some(live.clone());
        live as Arc<dyn CommitSink>
    };
    let store: Arc<dyn Store> = if config.is_postgres() {
        Arc::new(Postgres::open(&config.database, sink).await?)
    } else {
        Arc::new(Sqlite::open(&config.database_path(), sink)?)
    };
    Ok((store, live_slot.expect("the sink was built")))
}

/// Says NOT_SERVING, for the server and every service, while the database does
/// not answer or, in a cluster, NATS is unreachable, and SERVING again when both
/// are back: balancers and edges then send calls to other replicas meanwhile.
async fn watch_health(
    store: Arc<dyn Store>,
    cluster: Option<Arc<Cluster>>,
    health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    let mut every = tokio::time::interval(HEALTH_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let problem = match store.ping().await {
            Err(e) => Some(e.to_string()),
            Ok(()) => cluster
                .as_ref()
                .filter(|c| !c.connected())
                .map(|_| "NATS is unreachable".to_owned()),
        };
        let status = match (serving, problem) {
            (true, Some(why)) => {
                tracing::warn!(%why, "not serving until it is back");
                tonic_health::ServingStatus::NotServing
            }
            (false, None) => {
                tracing::info!("serving again");
                tonic_health::ServingStatus::Serving
            }
            _ => continue,
        };
        // Shutdown says NOT_SERVING for good.
        if shutdown.is_cancelled() {
            return;
        }
        serving = status == tonic_health::ServingStatus::Serving;
        for service in SERVICES {
            health.set_service_status(service, status).await;
        }
    }
}

/// Removes durable events older than `retention`, every [`PRUNE_EVERY`].
async fn prune(store: Arc<dyn Store>, retention: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(before) = SystemTime::now().checked_sub(retention) else {
            continue;
        };
        match store.prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "event retention"),
            Err(e) => tracing::warn!(error = %e, "event retention failed"),
        }
    }
}
