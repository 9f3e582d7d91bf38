-- Events, one row per deduplicated event. time and received_at are UTC, ms precision.
CREATE TABLE events (
    project_id   INTEGER      NOT NULL,
    event        VARCHAR      NOT NULL,
    distinct_id  VARCHAR      NOT NULL,
    time         TIMESTAMP_MS NOT NULL,
    insert_id    VARCHAR      NOT NULL,
    properties   VARCHAR      NOT NULL,  -- JSON object text, without the column fields
    received_at  TIMESTAMP_MS NOT NULL,
    endpoint     VARCHAR      NOT NULL,  -- track | import | import-legacy
    lib          VARCHAR,                -- mp_lib, when the client said
    -- md5 (128 bits) of (project, event, distinct_id, time in seconds, insert_id):
    -- the deduplication key of spec §7, checked by the index, never by a scan.
    dedup_key    UHUGEINT     NOT NULL PRIMARY KEY
);

-- How far the loader got in the journal; written in the same transaction as the rows.
CREATE TABLE load_checkpoint (
    id       INTEGER PRIMARY KEY,
    segment  BIGINT NOT NULL,
    "offset" BIGINT NOT NULL
);
