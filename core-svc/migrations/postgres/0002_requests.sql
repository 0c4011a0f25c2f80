-- Logi realtime core schema for PostgreSQL, version 2: CreateBooking's request ids.
-- A repeat of a request (same principal, same id) within the window returns the
-- booking it made.
CREATE TABLE booking_requests (
    principal  TEXT NOT NULL,            -- '{role}:{id}' of the caller
    request_id TEXT NOT NULL,
    booking_id BIGINT NOT NULL REFERENCES bookings (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (principal, request_id)
);
CREATE INDEX booking_requests_by_time ON booking_requests (created_at);
