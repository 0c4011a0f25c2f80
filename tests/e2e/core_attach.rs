//! EventService.Attach from a plain tonic client, as ws-edge uses it: many topics on
//! one stream, each topic's events once and in order, starts with snapshots or from
//! cursors (across a restart too), fresh snapshots between the events they cover and
//! those after, and unwatch.

use std::collections::VecDeque;

use crate::support::*;
use logi::auth::Role;
use logi::pb;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

struct Attached {
    requests: mpsc::Sender<pb::AttachRequest>,
    batches: Streaming<pb::EventBatch>,
    events: VecDeque<pb::Event>,
    /// Batches received, to see that events come several at a time.
    batch_count: usize,
}

async fn attach(client: &mut Client) -> Result<Attached, tonic::Status> {
    let (requests, rx) = mpsc::channel(16);
    let batches = client
        .events
        .attach(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Attached {
        requests,
        batches,
        events: VecDeque::new(),
        batch_count: 0,
    })
}

fn watch(topic: &str, resume: Option<pb::Cursor>, snapshot: bool) -> pb::WatchTopic {
    pb::WatchTopic {
        topic: topic.into(),
        resume,
        snapshot,
    }
}

impl Attached {
    async fn ask(&self, r: pb::AttachRequest) {
        self.requests.send(r).await.unwrap();
    }

    async fn watch(&self, topics: Vec<pb::WatchTopic>) {
        self.ask(pb::AttachRequest {
            watch: topics,
            ..Default::default()
        })
        .await;
    }

    async fn next(&mut self) -> pb::Event {
        while self.events.is_empty() {
            match tokio::time::timeout(PATIENCE, self.batches.next()).await {
                Ok(Some(Ok(batch))) => {
                    assert!(!batch.events.is_empty(), "no empty batches");
                    self.batch_count += 1;
                    self.events.extend(batch.events);
                }
                other => panic!("expected a batch, got {other:?}"),
            }
        }
        self.events.pop_front().unwrap()
    }

    async fn take(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(summary(&self.next().await));
        }
        out
    }

    async fn end(&mut self) -> tonic::Status {
        match tokio::time::timeout(PATIENCE, self.batches.next()).await {
            Ok(Some(Err(status))) => status,
            other => panic!("expected the stream to end with an error, got {other:?}"),
        }
    }

    async fn assert_quiet(&mut self) {
        assert!(self.events.is_empty(), "{:?}", self.events);
        let wait = std::time::Duration::from_millis(300);
        if let Ok(item) = tokio::time::timeout(wait, self.batches.next()).await {
            panic!("expected nothing more, got {item:?}");
        }
    }
}

async fn only_a_service_may_attach(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut admin = core.as_(Role::Admin, "ops").await;
    let refused = match attach(&mut admin).await {
        Err(status) => status,
        Ok(mut a) => a.end().await,
    };
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "Attach is for ws-edge, with a service token: apps and tools use Subscribe"
    );
    core.stop().await;
}

async fn many_topics_on_one_stream_each_event_once_and_in_order(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "ws-edge").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let mut edge = attach(&mut service).await.unwrap();
    let riders: Vec<String> = (0..50).map(|i| format!("r{i}")).collect();
    edge.watch(
        riders
            .iter()
            .map(|r| watch(&format!("user_{r}_bookings"), None, true))
            .collect(),
    )
    .await;
    let mut snapshots = edge.take(50).await;
    snapshots.sort();
    let mut expected: Vec<String> = riders
        .iter()
        .map(|r| format!("user_{r}_bookings snapshot bookings [] offers []"))
        .collect();
    expected.sort();
    assert_eq!(snapshots, expected);

    // Two rounds of a booking per rider, each round made at once (so commits carry
    // many events together): each rider's topic gets its two, in order.
    let before = edge.batch_count;
    let mut ids = std::collections::HashMap::new();
    for _ in 0..2 {
        let made = futures::future::join_all(riders.iter().map(|r| {
            let mut client = service.clone();
            async move { (r.clone(), client.book(r, "car").await.unwrap().id) }
        }))
        .await;
        for (r, id) in made {
            ids.entry(r).or_insert_with(Vec::new).push(id);
        }
    }
    let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
    for _ in 0..100 {
        let e = edge.next().await;
        seen.entry(e.topic.clone()).or_default().push(summary(&e));
    }
    for r in &riders {
        let topic = format!("user_{r}_bookings");
        let want: Vec<String> = ids[r]
            .iter()
            .map(|id| format!("{topic} booking_changed #{id} unspecified->pending"))
            .collect();
        assert_eq!(seen[&topic], want, "{topic}");
    }
    // SQLite commits the concurrent bookings in a few group commits, and each
    // commit's events travel together. PostgreSQL commits each on its own
    // connection and the hub passes each on at once, rather than holding one back
    // for company: there a batch is whatever queued while the last was sent.
    let batches = edge.batch_count - before;
    if !db.is_postgres() {
        assert!(batches < 100, "100 events came in {batches} batches");
    }
    edge.assert_quiet().await;
    core.stop().await;
}

async fn a_topic_resumes_from_its_cursor_across_a_restart_and_can_be_unwatched(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let addr = core.addr.to_string();
    let mut service = core.as_(Role::Service, "ws-edge").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let mut edge = attach(&mut service).await.unwrap();
    edge.watch(vec![watch("user_12_bookings", None, false)])
        .await;
    let head = edge.next().await;
    assert_eq!(summary(&head), "user_12_bookings stream_head");
    let first = service.book("12", "car").await.unwrap().id;
    let created = edge.next().await;
    assert_eq!(
        summary(&created),
        format!("user_12_bookings booking_changed #{first} unspecified->pending")
    );

    // Missed while core-svc restarts; the edge attaches again from its cursor.
    service.accept(first, "45").await.unwrap();
    core.stop().await;
    let core = spawn_core_on(&addr, &db, &[]).await;
    let mut service = core.as_(Role::Service, "ws-edge").await;
    let mut edge = attach(&mut service).await.unwrap();
    edge.watch(vec![watch("user_12_bookings", created.cursor, true)])
        .await;
    assert_eq!(
        edge.take(2).await,
        [
            format!("user_12_bookings booking_changed #{first} pending->accepted"),
            format!("user_12_bookings otp_issued #{first}"),
        ]
    );
    edge.assert_quiet().await;

    // Unwatched: nothing more of it.
    edge.ask(pb::AttachRequest {
        unwatch: vec!["user_12_bookings".into()],
        ..Default::default()
    })
    .await;
    edge.watch(vec![watch("admins", None, false)]).await;
    assert_eq!(edge.take(1).await, ["admins stream_head"]);
    let second = service.book("12", "car").await.unwrap().id;
    assert_eq!(
        edge.take(1).await,
        [format!(
            "admins booking_changed #{second} unspecified->pending"
        )]
    );
    edge.assert_quiet().await;
    core.stop().await;
}

async fn a_fresh_snapshot_comes_between_what_it_covers_and_what_follows(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "ws-edge").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let mut edge = attach(&mut service).await.unwrap();
    edge.watch(vec![watch("driver_45_available_bookings", None, true)])
        .await;
    assert_eq!(
        edge.take(1).await,
        ["driver_45_available_bookings snapshot bookings [] offers []"]
    );
    let first = service.book("12", "car").await.unwrap().id;
    let offered = edge.next().await;
    // A second app of driver 45 connects: its snapshot holds the open offer, at the
    // cursor of the offer it covers.
    edge.ask(pb::AttachRequest {
        snapshot: vec!["driver_45_available_bookings".into()],
        ..Default::default()
    })
    .await;
    let snapshot = edge.next().await;
    assert_eq!(
        summary(&snapshot),
        format!("driver_45_available_bookings snapshot bookings [] offers [{first}]")
    );
    assert_eq!(snapshot.cursor, offered.cursor);
    let second = service.book("13", "car").await.unwrap().id;
    assert_eq!(
        edge.take(1).await,
        [format!(
            "driver_45_available_bookings booking_offered #{second}"
        )]
    );
    edge.assert_quiet().await;

    // A topic name that is not one ends the attachment: the edge has a bug.
    edge.watch(vec![watch("not a topic", None, false)]).await;
    assert_eq!(edge.end().await.code(), tonic::Code::InvalidArgument);
    core.stop().await;
}

crate::on_every_store!(
    only_a_service_may_attach,
    many_topics_on_one_stream_each_event_once_and_in_order,
    a_topic_resumes_from_its_cursor_across_a_restart_and_can_be_unwatched,
    a_fresh_snapshot_comes_between_what_it_covers_and_what_follows,
);
