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

-- The sessions stored before: the same figures from their raw events still retained (one pass
-- each; a session whose page views were all deleted by retention keeps none).
UPDATE sessions s
JOIN (
    SELECT project, session_id, COUNT(*) AS views
    FROM user_events
    WHERE event_type = 'page_view' AND session_id IS NOT NULL AND is_bot = 0
    GROUP BY project, session_id
) v ON v.project = s.project AND v.session_id = s.session_id
SET s.page_views = v.views;

UPDATE sessions s
JOIN (
    SELECT project, session_id, page_path, event_time, event_id FROM (
        SELECT project, session_id, page_path, event_time, event_id,
            ROW_NUMBER() OVER (PARTITION BY project, session_id ORDER BY event_time, event_id) AS n
        FROM user_events
        WHERE event_type = 'page_view' AND session_id IS NOT NULL AND is_bot = 0
    ) ranked WHERE n = 1
) f ON f.project = s.project AND f.session_id = s.session_id
SET s.entry_path = f.page_path, s.entry_at = f.event_time, s.entry_event_id = f.event_id;

UPDATE sessions s
JOIN (
    SELECT project, session_id, page_path, event_time, event_id FROM (
        SELECT project, session_id, page_path, event_time, event_id,
            ROW_NUMBER() OVER (PARTITION BY project, session_id
                ORDER BY event_time DESC, event_id DESC) AS n
        FROM user_events
        WHERE event_type = 'page_view' AND session_id IS NOT NULL AND is_bot = 0
    ) ranked WHERE n = 1
) l ON l.project = s.project AND l.session_id = s.session_id
SET s.exit_path = l.page_path, s.exit_at = l.event_time, s.exit_event_id = l.event_id;
