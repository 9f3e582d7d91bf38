-- Profile updates from /engage and /groups, in arrival order: (journal position, index
-- within the record) is both that order and the key that makes loading idempotent.
CREATE TABLE profile_updates (
    project_id      INTEGER      NOT NULL,
    kind            VARCHAR      NOT NULL,  -- user | group
    distinct_id     VARCHAR,
    group_key       VARCHAR,
    group_id        VARCHAR,
    operation       VARCHAR      NOT NULL,  -- $set, $set_once, $add, $union, $append, $remove, $unset, $delete
    value           VARCHAR      NOT NULL,  -- JSON
    modifiers       VARCHAR      NOT NULL,  -- JSON object: $ip, $time, $ignore_time, ...
    time            TIMESTAMP_MS NOT NULL,
    received_at     TIMESTAMP_MS NOT NULL,
    journal_segment BIGINT       NOT NULL,
    journal_offset  BIGINT       NOT NULL,
    seq             INTEGER      NOT NULL,
    PRIMARY KEY (journal_segment, journal_offset, seq)
);
