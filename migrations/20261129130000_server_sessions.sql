-- A session keeps its page views and its entry and exit pages (issue 19): the stats API reads
-- them from the row (crates/stats-api/src/sessions.rs) instead of ranking every page view of
-- the range's sessions with window functions. Written by the worker with the session
-- (crates/worker/src/store/sessions.rs): the entry is the first page view by (event time,
-- event id), the exit the last; the time and event id are kept so that a late page view
-- replaces them only if it comes first (last), whatever the arrival order.
ALTER TABLE sessions
    ADD COLUMN page_views     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN entry_path     VARCHAR(512)    NULL,
    ADD COLUMN entry_at       DATETIME(3)     NULL,
    ADD COLUMN entry_event_id VARCHAR(128)    NULL,
    ADD COLUMN exit_path      VARCHAR(512)    NULL,
    ADD COLUMN exit_at        DATETIME(3)     NULL,
    ADD COLUMN exit_event_id  VARCHAR(128)    NULL;

-- The sessions stored before: the same figures from their raw events still retained (a
-- session whose page views were all deleted by retention keeps none). Gathered per session in
-- a keyed table first, two passes over the page views, then joined on the keys: an UPDATE
-- joined to a derived table took minutes per 100,000 sessions.
CREATE TEMPORARY TABLE session_pages (
    project        VARCHAR(64)     NOT NULL,
    session_id     VARCHAR(128)    NOT NULL,
    page_views     BIGINT UNSIGNED NOT NULL,
    entry_path     VARCHAR(512)    NULL,
    entry_at       DATETIME(3)     NULL,
    entry_event_id VARCHAR(128)    NULL,
    exit_path      VARCHAR(512)    NULL,
    exit_at        DATETIME(3)     NULL,
    exit_event_id  VARCHAR(128)    NULL,
    PRIMARY KEY (project, session_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO session_pages (project, session_id, page_views, entry_path, entry_at, entry_event_id)
SELECT project, session_id, views, page_path, event_time, event_id FROM (
    SELECT project, session_id, page_path, event_time, event_id,
        ROW_NUMBER() OVER (PARTITION BY project, session_id ORDER BY event_time, event_id) AS n,
        COUNT(*) OVER (PARTITION BY project, session_id) AS views
    FROM user_events
    WHERE event_type = 'page_view' AND session_id IS NOT NULL AND is_bot = 0
) ranked WHERE n = 1;

INSERT INTO session_pages (project, session_id, page_views, exit_path, exit_at, exit_event_id)
SELECT project, session_id, 0, page_path, event_time, event_id FROM (
    SELECT project, session_id, page_path, event_time, event_id,
        ROW_NUMBER() OVER (PARTITION BY project, session_id
            ORDER BY event_time DESC, event_id DESC) AS n
    FROM user_events
    WHERE event_type = 'page_view' AND session_id IS NOT NULL AND is_bot = 0
) ranked WHERE n = 1
ON DUPLICATE KEY UPDATE exit_path = VALUES(exit_path), exit_at = VALUES(exit_at),
    exit_event_id = VALUES(exit_event_id);

UPDATE sessions s
JOIN session_pages p ON p.project = s.project AND p.session_id = s.session_id
SET s.page_views = p.page_views, s.entry_path = p.entry_path, s.entry_at = p.entry_at,
    s.entry_event_id = p.entry_event_id, s.exit_path = p.exit_path, s.exit_at = p.exit_at,
    s.exit_event_id = p.exit_event_id;

DROP TEMPORARY TABLE session_pages;
