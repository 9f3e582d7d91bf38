-- What each project's events look like (Mixpanel's Lexicon): each event name, and each
-- property of it by the JSON type it arrived with. The loader counts the events it adds
-- in the same transaction as the events themselves, so a duplicate is never counted
-- and a replay after a crash never counts twice. Seen times are arrival (received_at).
CREATE TABLE event_names (
    project_id  INTEGER      NOT NULL,
    event       VARCHAR      NOT NULL,
    count       BIGINT       NOT NULL,
    first_seen  TIMESTAMP_MS NOT NULL,
    last_seen   TIMESTAMP_MS NOT NULL,
    PRIMARY KEY (project_id, event)
);

CREATE TABLE event_properties (
    project_id  INTEGER      NOT NULL,
    event       VARCHAR      NOT NULL,
    property    VARCHAR      NOT NULL,
    type        VARCHAR      NOT NULL,  -- string | number | boolean | list | object | null
    count       BIGINT       NOT NULL,
    first_seen  TIMESTAMP_MS NOT NULL,
    last_seen   TIMESTAMP_MS NOT NULL,
    PRIMARY KEY (project_id, event, property, type)
);
