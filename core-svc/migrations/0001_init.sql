-- Logi realtime core schema, version 1. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE drivers (
    id           TEXT PRIMARY KEY,
    status       TEXT NOT NULL,          -- 'Available' | 'On Trip' | 'Offline'
    vehicle_type TEXT NOT NULL,
    updated_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE bookings (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         TEXT NOT NULL,
    driver_id       TEXT,
    status          TEXT NOT NULL,       -- 'pending' | 'accepted' | 'on_trip' | 'completed' | 'cancelled' | 'expired'
    pickup_lat      REAL NOT NULL,
    pickup_lon      REAL NOT NULL,
    pickup_address  TEXT NOT NULL,
    dropoff_lat     REAL NOT NULL,
    dropoff_lon     REAL NOT NULL,
    dropoff_address TEXT NOT NULL,
    vehicle_type    TEXT NOT NULL,
    price_estimate  REAL NOT NULL,
    distance_m      REAL NOT NULL,
    phone_number    TEXT NOT NULL,
    otp             TEXT,
    otp_failures    INTEGER NOT NULL DEFAULT 0,
    cancelled_by    TEXT,                -- 'user' | 'driver'
    cancel_reason   TEXT NOT NULL DEFAULT '',
    pickup_time     INTEGER,
    dropoff_time    INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX bookings_by_user ON bookings (user_id, id);
CREATE INDEX bookings_by_driver ON bookings (driver_id, id);
CREATE INDEX bookings_by_status ON bookings (status, id);

CREATE TABLE offers (
    booking_id  INTEGER NOT NULL REFERENCES bookings (id),
    driver_id   TEXT NOT NULL,
    state       TEXT NOT NULL,           -- 'open' | 'accepted' | 'taken' | 'cancelled' | 'expired' | 'withdrawn'
    distance_m  REAL NOT NULL,
    offered_at  INTEGER NOT NULL,
    closed_at   INTEGER,
    PRIMARY KEY (booking_id, driver_id)
) WITHOUT ROWID;
CREATE INDEX offers_by_driver ON offers (driver_id, booking_id);

-- One row per topic: the last durable sequence number appended, and the last one
-- removed by retention (resuming from before it needs a re-sync).
CREATE TABLE topics (
    name       TEXT PRIMARY KEY,
    last_seq   INTEGER NOT NULL,
    pruned_seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Durable events; payload is a protobuf logi.v1.Event with only `kind` set.
CREATE TABLE events (
    topic       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    payload     BLOB NOT NULL,
    PRIMARY KEY (topic, seq)
) WITHOUT ROWID;
CREATE INDEX events_by_time ON events (occurred_at);
