//! A replica killed with SIGKILL (no shutdown, no last message to the others) in
//! the middle of a lifecycle load, with real core-svc processes: every
//! transition a caller was told of is in the database and reaches the
//! subscribers of the surviving replica exactly once, the dead replica's pending
//! bookings still expire, and the survivor's subscribers never notice.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logi::auth::Role;
use logi::pb::{self, event::Kind};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::support::*;

/// A core-svc process of the cluster.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The core-svc binary `cargo test --workspace` builds beside this test binary.
fn core_svc_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let bin = deps.parent().unwrap().parent().unwrap().join("core-svc");
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build -p core-svc) or run cargo test --workspace",
        bin.display()
    );
    bin
}

/// Starts a replica and waits until it serves; its log goes to `log`.
async fn start(database: &str, nats: &str, log: &std::path::Path) -> Replica {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(core_svc_binary())
        .env_clear()
        .env("LOGI_GRPC_ADDR", addr.to_string())
        .env("LOGI_METRICS_ADDR", "off")
        .env("LOGI_DATABASE", database)
        .env("LOGI_NATS_URL", nats)
        .env("LOGI_JWT_SECRET", SECRET)
        .env("LOGI_DISPATCH_LEASE", "1s")
        .env("LOGI_OFFER_TIMEOUT", "4s")
        .env("LOGI_DISPATCH_DRIVERS", "50")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let replica = Replica { child, addr };
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
            {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let check = health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await;
                if check.is_ok_and(|r| r.get_ref().status == 1) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the replica serves");
    replica
}

async fn client(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Client::new(channel, &token(Role::Service, "backend"))
}

/// The transitions callers were told of: (booking, status).
type Acked = Arc<Mutex<Vec<(u64, i32)>>>;

/// One rider's trips with its own driver: on replica `first` until it fails, then
/// on `survivor`, going on from wherever the booking is.
async fn rides(rider: String, driver: String, first: Client, mut survivor: Client, acked: Acked) {
    let mut on = first;
    let record = |b: &pb::Booking| acked.lock().unwrap().push((b.id, b.status));
    for _ in 0..3 {
        let Ok(booking) = survivor.book(&rider, "car").await else {
            continue;
        };
        record(&booking);
        let id = booking.id;
        loop {
            let now = survivor.get(id).await.unwrap();
            let step = match pb::BookingStatus::try_from(now.status).unwrap() {
                pb::BookingStatus::Pending => on.accept(id, driver.as_str()).await,
                pb::BookingStatus::Accepted => on.verify(id, driver.as_str(), now.otp).await,
                pb::BookingStatus::OnTrip => on.complete(id, driver.as_str()).await,
                _ => break,
            };
            match step {
                Ok(b) => record(&b),
                // The replica went away: the rest goes through the survivor.
                Err(s)
                    if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown =>
                {
                    on = survivor.clone();
                }
                // Not offered: the survivor had not heard yet that the driver was
                // free again (its last trip ended on the dead replica). Give up
                // this booking.
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    if let Ok(b) = survivor.cancel(id, "driver not offered").await {
                        record(&b);
                    }
                    break;
                }
                Err(s) => panic!("{rider}: {s:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_replica_killed_mid_load_loses_no_acknowledged_transition() {
    let Some((db, nats)) = Db::cluster().await else {
        return;
    };
    let logs = std::env::var("LOGI_TEST_LOGS").map_or_else(|_| db.dir().to_owned(), PathBuf::from);
    let doomed = start(db.location(), &nats, &logs.join("doomed.log")).await;
    let survivor = start(db.location(), &nats, &logs.join("survivor.log")).await;
    let mut on_survivor = client(survivor.addr).await;
    for d in 0..8 {
        on_survivor
            .driver_online(
                &format!("d{d}"),
                "car",
                PICKUP.0 + 0.0001 * f64::from(d),
                PICKUP.1,
            )
            .await;
    }
    // Every change from here on reaches the admins topic: read it on the survivor.
    let admin = client(survivor.addr).await;
    let mut admins = admin.clone().subscribe(&["admins"]).await;
    let seen: Arc<Mutex<Vec<pb::Event>>> = Arc::default();
    let reader = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Some(Ok(e)) = admins.0.next().await {
                seen.lock().unwrap().push(e);
            }
        }
    });

    // Pending bookings only the doomed replica dispatches: no van drives here.
    let mut on_doomed = client(doomed.addr).await;
    let mut vans = Vec::new();
    for r in 0..3 {
        vans.push(on_doomed.book(&format!("v{r}"), "van").await.unwrap().id);
    }
    let acked: Acked = Arc::default();
    let riders: Vec<_> = (0..8)
        .map(|i| {
            let first = if i % 2 == 0 {
                on_doomed.clone()
            } else {
                on_survivor.clone()
            };
            tokio::spawn(rides(
                format!("r{i}"),
                format!("d{i}"),
                first,
                on_survivor.clone(),
                acked.clone(),
            ))
        })
        .collect();
    // Killed once the load is under way.
    tokio::time::timeout(PATIENCE, async {
        while acked.lock().unwrap().len() < 12 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    drop(doomed);
    for rider in riders {
        rider.await.unwrap();
    }

    // The vans expire through the survivor: its lease round takes them over.
    for id in &vans {
        tokio::time::timeout(Duration::from_secs(10), async {
            while on_survivor.get(*id).await.unwrap().status != pb::BookingStatus::Expired as i32 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("a pending booking of the dead replica expires");
    }
    // Quiet detection (3 s) and the fills that follow have run by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    reader.abort();
    let seen = seen.lock().unwrap().clone();

    // Every admins event once, in order, with no gap: sequence numbers follow on.
    let seqs: Vec<u64> = seen
        .iter()
        .map(|e| e.cursor.unwrap().offset / core_svc::hub::EPHEMERAL_SPAN)
        .collect();
    let first = seqs[0];
    assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>());
    let mut head = client(survivor.addr).await;
    let head_now = head
        .events
        .subscribe(pb::SubscribeRequest {
            topics: vec!["admins".into()],
            heads: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        head_now.cursor.unwrap().offset / core_svc::hub::EPHEMERAL_SPAN,
        *seqs.last().unwrap(),
        "the subscriber got every event up to the head"
    );

    // Every acknowledged transition is there, once.
    let mut changes: HashMap<(u64, i32), usize> = HashMap::new();
    for e in &seen {
        if let Some(Kind::BookingChanged(c)) = &e.kind {
            let b = c.booking.as_ref().unwrap();
            *changes.entry((b.id, b.status)).or_default() += 1;
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 12,
        "the load went on after the kill: {}",
        acked.len()
    );
    for ack in &acked {
        assert_eq!(changes.get(ack), Some(&1), "acknowledged {ack:?}");
    }
    for id in &vans {
        assert_eq!(
            changes.get(&(*id, pb::BookingStatus::Expired as i32)),
            Some(&1)
        );
    }
    drop(survivor);
}
