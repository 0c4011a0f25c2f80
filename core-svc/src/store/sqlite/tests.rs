//! What only the SQLite store does; the tests of every store are in
//! `store::tests`.

use super::*;
use crate::model::BookingStatus;
use crate::store::tests::{Recorder, id, new_booking, offer, offered_to_45, online};

#[tokio::test]
async fn a_full_disk_answers_unavailable_changes_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Sqlite::open(&dir.path().join("logi.db"), |_| {
        Arc::new(Recorder::default()) as Arc<dyn CommitSink>
    })
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    online(&store, "45").await;
    let before = offered_to_45(&store).await;
    // The database may not grow past its current size: SQLite answers SQLITE_FULL,
    // as it does when the disk itself is full.
    let pages: i64 = sqlite
        .0
        .writer
        .write(|t| {
            let n: i64 = t.tx.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            t.tx.query_row(&format!("PRAGMA max_page_count = {n}"), [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(n)
        })
        .await
        .unwrap();
    let mut refused = None;
    for _ in 0..200 {
        match store.create_booking(new_booking(), vec![offer("45")]).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the database filled up");
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "{}",
        crate::error::chain(&refused)
    );
    assert_eq!(refused.to_string(), crate::error::DISK_FULL);
    // Many at once, committed together: every caller of the batch hears UNAVAILABLE,
    // those whose write was never run too.
    let many = futures::future::join_all(
        (0..32).map(|_| store.create_booking(new_booking(), vec![offer("45")])),
    )
    .await;
    for answer in many {
        let e = answer.unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::Unavailable,
            "{}",
            crate::error::chain(&e)
        );
    }
    let (page, _) = store
        .bookings(BookingQuery {
            user_id: Some(id("12")),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    let newest = page[0].id;

    // Space again: writes go on, and the refused one left nothing behind.
    sqlite
        .0
        .writer
        .write(move |t| {
            t.tx.query_row(
                &format!("PRAGMA max_page_count = {}", pages * 1000),
                [],
                |r| r.get::<_, i64>(0),
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let after = store
        .create_booking(new_booking(), vec![offer("45")])
        .await
        .unwrap();
    assert_eq!(
        after.id,
        newest + 1,
        "no booking half-written by the refused call"
    );
    assert!(after.id > before.id);
    assert_eq!(
        store.booking(before.id).await.unwrap().status,
        BookingStatus::Pending
    );
}
