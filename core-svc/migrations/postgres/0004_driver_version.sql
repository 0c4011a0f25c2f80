-- Logi realtime core schema for PostgreSQL, version 4: a counter of the changes
-- committed to each driver (status, vehicle type, active trip), so that the
-- in-memory registries can tell a newer change from an older one that reached them
-- late (commits of several connections and replicas arrive in any order).
ALTER TABLE drivers ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
