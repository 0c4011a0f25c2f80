//! What only the PostgreSQL store does: concurrent transactions, several
//! replicas on one database, a server that is away. The tests of every store are
//! in `store::tests`.

use tokio_postgres::NoTls;

use super::*;
use crate::store::tests::{
    Database, Fixture, POSTGRES_URL, Recorder, id, new_booking, offer, online,
};

fn sink(_: u64) -> Arc<dyn CommitSink> {
    Arc::new(Recorder::default())
}

/// A plain connection to the fixture's database, to look at its rows.
async fn look(fx: &Fixture) -> tokio_postgres::Client {
    let Database::Postgres(db) = &fx.place else {
        unreachable!()
    };
    let (client, connection) = tokio_postgres::connect(db.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Every topic's events are numbered 1..=last_seq: no gap, no repeat.
async fn assert_contiguous(c: &tokio_postgres::Client) {
    let rows = c
        .query(
            "SELECT t.name, t.last_seq, COUNT(e.seq), COALESCE(MIN(e.seq), 0), COALESCE(MAX(e.seq), 0)
             FROM topics t LEFT JOIN events e ON e.topic = t.name GROUP BY t.name, t.last_seq",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        let (name, last): (String, i64) = (r.get(0), r.get(1));
        let (count, min, max): (i64, i64, i64) = (r.get(2), r.get(3), r.get(4));
        assert_eq!((count, min, max), (last, 1, last), "topic {name}");
    }
}

#[tokio::test]
async fn fifty_drivers_accepting_one_booking_at_once_one_wins() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    let drivers: Vec<String> = (100..150).map(|d| d.to_string()).collect();
    for d in &drivers {
        online(&fx.store, d).await;
    }
    let offers = drivers.iter().map(|d| offer(d)).collect();
    let b = fx
        .store
        .create_booking(new_booking(), offers)
        .await
        .unwrap();
    let calls: Vec<_> = drivers
        .iter()
        .map(|d| {
            let (store, d) = (fx.store.clone(), id(d));
            tokio::spawn(async move { store.accept(b.id, d).await })
        })
        .collect();
    let mut won = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => won += 1,
            Err(e @ (Error::Taken(_) | Error::FailedPrecondition(_))) => {
                assert_eq!(e.code(), tonic::Code::FailedPrecondition)
            }
            Err(e) => panic!("{}", crate::error::chain(&e)),
        }
    }
    assert_eq!(won, 1);
    let c = look(&fx).await;
    let accepted: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM bookings WHERE status = 'accepted'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(accepted, 1);
    let on_trip: i64 = c
        .query_one("SELECT COUNT(*) FROM drivers WHERE status = 'On Trip'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_trip, 1);
    assert_contiguous(&c).await;
}

#[tokio::test]
async fn concurrent_writes_keep_every_topic_contiguous() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    for d in ["45", "46", "47"] {
        online(&fx.store, d).await;
    }
    // Bookings offered to overlapping drivers, accepted and cancelled at once: the
    // same driver, booking and admins rows from many sides.
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let store = fx.store.clone();
            tokio::spawn(async move {
                let b = store
                    .create_booking(new_booking(), vec![offer("45"), offer("46"), offer("47")])
                    .await?;
                let driver = ["45", "46", "47"][i % 3];
                if store.accept(b.id, id(driver)).await.is_ok() {
                    store
                        .cancel(b.id, Canceller::Driver, Some(id(driver)), String::new())
                        .await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for call in calls {
        if let Err(e) = call.await.unwrap() {
            panic!("{}", crate::error::chain(&e));
        }
    }
    assert_contiguous(&look(&fx).await).await;
    assert!(
        fx.store
            .drivers()
            .await
            .unwrap()
            .iter()
            .all(|d| d.driver.status == DriverStatus::Available && d.driver.active.is_none())
    );
}

#[tokio::test]
async fn replicas_share_one_epoch_and_both_write() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    let (other, _) = fx.another().await;
    assert_eq!(other.epoch(), fx.store.epoch());
    online(&other, "45").await;
    let b = fx
        .store
        .create_booking(new_booking(), vec![offer("45")])
        .await
        .unwrap();
    let accepted = other.accept(b.id, id("45")).await.unwrap();
    assert_eq!(fx.store.booking(b.id).await.unwrap(), accepted);
    assert_eq!(
        fx.store
            .topic_state("user_12_bookings".into())
            .await
            .unwrap()
            .last_seq,
        3
    );
    assert_contiguous(&look(&fx).await).await;
}

#[tokio::test]
async fn replicas_starting_together_migrate_once_and_agree_on_the_epoch() {
    let Ok(admin) = std::env::var(POSTGRES_URL) else {
        return;
    };
    let db = scratch::ScratchDatabase::create(&admin).await.unwrap();
    let opened = futures::future::join_all((0..4).map(|_| Postgres::open(db.url(), sink))).await;
    let epochs: Vec<u64> = opened.into_iter().map(|s| s.unwrap().epoch()).collect();
    assert!(epochs.iter().all(|e| *e == epochs[0]), "{epochs:?}");
    assert!(epochs[0] > 0 && epochs[0] < 1 << 53);
}

#[tokio::test]
async fn an_unreachable_server_fails_open_in_one_line_without_the_password() {
    for (url, shown) in [
        (
            "postgres://postgres@127.0.0.1:1/x",
            "postgres://postgres@127.0.0.1:1/x",
        ),
        (
            "postgres://postgres:s3cret@127.0.0.1:1/x",
            "postgres://postgres@127.0.0.1:1/x",
        ),
    ] {
        let e = Postgres::open(url, sink).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot connect to PostgreSQL at {shown}: connection refused")
        );
        assert_eq!(e.code(), tonic::Code::Unavailable);
    }
}
