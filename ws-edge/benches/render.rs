//! Event → frame rendering, per dialect: the per-frame work of the edge.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use logi::auth::Role;
use logi::id::Id;
use logi::pb::{self, event::Kind};
use ws_edge::dialect::{Audience, render};
use ws_edge::route::{ChannelsRoute, Dialect};

fn events() -> (pb::Event, pb::Event) {
    let place = |address: &str| {
        Some(pb::Place {
            latitude: 37.7749,
            longitude: -122.4194,
            address: address.into(),
        })
    };
    let booking = pb::Booking {
        id: 123,
        user_id: "12".into(),
        driver_id: "45".into(),
        status: pb::BookingStatus::Accepted as i32,
        pickup: place("123 Main St"),
        dropoff: place("456 Elm St"),
        vehicle_type: "car".into(),
        price_estimate: 25.5,
        phone_number: "+1234567890".into(),
        ..Default::default()
    };
    let changed = pb::Event {
        topic: "user_12_bookings".into(),
        cursor: Some(pb::Cursor {
            epoch: 1,
            offset: 2_000_000_000,
        }),
        occurred_at: None,
        kind: Some(Kind::BookingChanged(pb::BookingChanged {
            booking: Some(booking),
            previous_status: 1,
        })),
    };
    let location = pb::Event {
        topic: "user_12_bookings".into(),
        cursor: Some(pb::Cursor {
            epoch: 1,
            offset: 2_000_000_001,
        }),
        occurred_at: None,
        kind: Some(Kind::DriverLocation(pb::DriverLocationChanged {
            booking_id: 123,
            booking_status: pb::BookingStatus::OnTrip as i32,
            location: Some(pb::DriverLocation {
                driver_id: "45".into(),
                latitude: 37.7749,
                longitude: -122.4194,
                ..Default::default()
            }),
        })),
    };
    (changed, location)
}

fn bench(c: &mut Criterion) {
    let (changed, location) = events();
    let channels = Audience {
        dialect: Dialect::Channels(ChannelsRoute::UserBookings),
        principal: Id::new("12").unwrap(),
        role: Role::User,
    };
    let logi = Audience {
        dialect: Dialect::Logi,
        principal: Id::new("12").unwrap(),
        role: Role::User,
    };
    for (name, audience) in [("channels", &channels), ("logi", &logi)] {
        c.bench_function(&format!("render {name} booking change to text"), |b| {
            b.iter(|| {
                render(black_box(&changed), audience)
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
            })
        });
        c.bench_function(&format!("render {name} location to text"), |b| {
            b.iter(|| {
                render(black_box(&location), audience)
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
