-- Logi realtime core schema for PostgreSQL, version 5: which core-svc replica
-- drives each pending booking's dispatch (widening, expiry), and until when
-- (milliseconds since the Unix epoch, by the database's clock, so replicas'
-- clocks need not agree). A lease that lapses (its replica died) is taken by
-- another replica.
CREATE TABLE dispatch_leases (
    booking_id BIGINT PRIMARY KEY REFERENCES bookings (id),
    owner      BIGINT NOT NULL,
    until      BIGINT NOT NULL
);
CREATE INDEX dispatch_leases_by_owner ON dispatch_leases (owner);
