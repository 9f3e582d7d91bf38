-- Profiles as their updates left them: the fold, in journal order, of profile_updates
-- (ingest/profile_ops.py says what each operation does). One row per user profile
-- (group_key = '') or group profile (group_key = the group's key, e.g. 'company').
-- A deleted profile has no row. The loader keeps this table and profile_updates in
-- step, in the transaction that advances the load checkpoint.
CREATE TABLE profiles (
    project_id  INTEGER      NOT NULL,
    group_key   VARCHAR      NOT NULL,
    profile_id  VARCHAR      NOT NULL,  -- $distinct_id, or $group_id
    properties  VARCHAR      NOT NULL,  -- JSON object
    updated_at  TIMESTAMP_MS NOT NULL,  -- time of the last update applied
    PRIMARY KEY (project_id, group_key, profile_id)
);
