-- Logi realtime core schema, version 4: a counter of the changes committed to each
-- driver (status, vehicle type, active trip), so that the in-memory registry can
-- tell a newer change from an older one that reached it late.
ALTER TABLE drivers ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
