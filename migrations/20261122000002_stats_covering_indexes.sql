-- Covering indexes for the stats API: unique users over a range (summary, breakdowns) and
-- funnel / conversion scans read (project, [event_type,] event_time, distinct_id) from the
-- index alone instead of one primary-key lookup per event.
CREATE INDEX ix_user_events_time_user ON user_events (project, event_time, distinct_id);
CREATE INDEX ix_user_events_type_time_user ON user_events (project, event_type, event_time, distinct_id);
