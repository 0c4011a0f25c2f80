-- Logi realtime core schema, version 5: which core-svc replica drives each pending
-- booking's dispatch (widening, expiry), and until when (milliseconds since the
-- Unix epoch). A lease that lapses (its replica died) is taken by another.
CREATE TABLE dispatch_leases (
    booking_id INTEGER PRIMARY KEY REFERENCES bookings (id),
    owner      INTEGER NOT NULL,
    until      INTEGER NOT NULL
);
CREATE INDEX dispatch_leases_by_owner ON dispatch_leases (owner);
