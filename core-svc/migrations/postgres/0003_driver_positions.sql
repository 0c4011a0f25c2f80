-- Logi realtime core schema for PostgreSQL, version 3: each driver's last position
-- and when it was seen (written behind, every few seconds, not per ping), and
-- whether it is unseen: still registered Available, but silent past
-- --driver-stale-after, so out of dispatch until its next position.
ALTER TABLE drivers ADD COLUMN lat DOUBLE PRECISION;
ALTER TABLE drivers ADD COLUMN lon DOUBLE PRECISION;
ALTER TABLE drivers ADD COLUMN heading DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE drivers ADD COLUMN speed_mps DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE drivers ADD COLUMN seen_at BIGINT;
ALTER TABLE drivers ADD COLUMN unseen BOOLEAN NOT NULL DEFAULT FALSE;
