-- InsightFlow schema. Identifiers compare byte for byte (utf8mb4_bin): "A" and "a" are
-- different event, user and session ids. Times are UTC, millisecond precision.

-- Every accepted event, once: UNIQUE (project, event_id) is what makes replays harmless.
CREATE TABLE user_events (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    project          VARCHAR(64)   NOT NULL,
    event_id         VARCHAR(128)  NOT NULL,
    event_type       VARCHAR(64)   NOT NULL,
    event_name       VARCHAR(1024) NULL,
    user_id          VARCHAR(255)  NULL,
    anonymous_id     VARCHAR(255)  NULL,
    -- user_id, else anonymous_id: the id every aggregate counts people by.
    distinct_id      VARCHAR(255)  NOT NULL,
    session_id       VARCHAR(128)  NULL,
    page_url         TEXT          NULL,
    -- Truncated to 512 characters so it can be indexed and rolled up.
    page_path        VARCHAR(512)  NULL,
    page_title       TEXT          NULL,
    referrer         TEXT          NULL,
    element_tag      VARCHAR(64)   NULL,
    element_id       VARCHAR(1024) NULL,
    element_classes  TEXT          NULL,
    element_text     TEXT          NULL,
    element_selector TEXT          NULL,
    click_x          INT           NULL,
    click_y          INT           NULL,
    properties       JSON          NULL,
    user_properties  JSON          NULL,
    context          JSON          NULL,
    user_agent       VARCHAR(512)  NULL,
    browser          VARCHAR(64)   NULL,
    browser_version  VARCHAR(64)   NULL,
    os               VARCHAR(64)   NULL,
    device_type      VARCHAR(16)   NULL,
    ip               VARCHAR(45)   NULL,
    -- The time used for every aggregate (client time corrected for skew, see timestamp_source).
    event_time       DATETIME(3)   NOT NULL,
    client_time      DATETIME(3)   NULL,
    timestamp_source VARCHAR(24)   NOT NULL,
    received_at      DATETIME(3)   NOT NULL,
    stored_at        DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY uq_user_events_event (project, event_id),
    KEY ix_user_events_user_time (project, distinct_id, event_time),
    KEY ix_user_events_type_time (project, event_type, event_time),
    KEY ix_user_events_page_time (project, page_path, event_time),
    KEY ix_user_events_time (project, event_time),
    KEY ix_user_events_retention (event_time)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per project and person (distinct_id), maintained from new events only.
CREATE TABLE users (
    project        VARCHAR(64)     NOT NULL,
    distinct_id    VARCHAR(255)    NOT NULL,
    user_id        VARCHAR(255)    NULL,
    anonymous_id   VARCHAR(255)    NULL,
    first_seen     DATETIME(3)     NOT NULL,
    last_seen      DATETIME(3)     NOT NULL,
    total_events   BIGINT UNSIGNED NOT NULL,
    total_sessions BIGINT UNSIGNED NOT NULL,
    device_type    VARCHAR(16)     NULL,
    browser        VARCHAR(64)     NULL,
    os             VARCHAR(64)     NULL,
    -- user_properties merged (JSON merge patch) in event-time order of arrival.
    properties     JSON            NULL,
    PRIMARY KEY (project, distinct_id),
    KEY ix_users_last_seen (project, last_seen)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE sessions (
    project     VARCHAR(64)     NOT NULL,
    session_id  VARCHAR(128)    NOT NULL,
    distinct_id VARCHAR(255)    NOT NULL,
    started_at  DATETIME(3)     NOT NULL,
    last_seen   DATETIME(3)     NOT NULL,
    events      BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (project, session_id),
    KEY ix_sessions_started (project, started_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Named ordered steps ([{"event_type": "...", "property": "...", "value": ...}]) and a
-- conversion window.
CREATE TABLE funnel_configs (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    project        VARCHAR(64)     NOT NULL,
    name           VARCHAR(128)    NOT NULL,
    steps          JSON            NOT NULL,
    window_seconds INT UNSIGNED    NOT NULL DEFAULT 86400,
    order_mode     VARCHAR(16)     NOT NULL DEFAULT 'ordered',
    created_at     DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at     DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY uq_funnel_configs_name (project, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO funnel_configs (project, name, steps, window_seconds, order_mode) VALUES
    ('default', 'purchase',
     '[{"event_type":"page_view"},{"event_type":"product_view"},{"event_type":"cart_add"},{"event_type":"purchase"}]',
     86400, 'ordered');

-- Rollups outlive Redis retention. Maintained in the same transaction as the raw insert, from
-- new events only, so they are exact.
CREATE TABLE rollup_events_minute (
    project    VARCHAR(64)     NOT NULL,
    bucket     DATETIME        NOT NULL,
    event_type VARCHAR(64)     NOT NULL,
    events     BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (project, bucket, event_type)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE rollup_events_hour (
    project    VARCHAR(64)     NOT NULL,
    bucket     DATETIME        NOT NULL,
    event_type VARCHAR(64)     NOT NULL,
    events     BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (project, bucket, event_type)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE rollup_page_views_hour (
    project   VARCHAR(64)     NOT NULL,
    bucket    DATETIME        NOT NULL,
    page_path VARCHAR(512)    NOT NULL,
    views     BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (project, bucket, page_path)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
