-- Logi realtime core schema, version 3: each driver's last position and when it was
-- seen (written behind, every few seconds, not per ping), and whether it is unseen:
-- still registered Available, but silent past --driver-stale-after, so out of
-- dispatch until its next position.
ALTER TABLE drivers ADD COLUMN lat REAL;
ALTER TABLE drivers ADD COLUMN lon REAL;
ALTER TABLE drivers ADD COLUMN heading REAL NOT NULL DEFAULT 0;
ALTER TABLE drivers ADD COLUMN speed_mps REAL NOT NULL DEFAULT 0;
ALTER TABLE drivers ADD COLUMN seen_at INTEGER;
ALTER TABLE drivers ADD COLUMN unseen INTEGER NOT NULL DEFAULT 0;
