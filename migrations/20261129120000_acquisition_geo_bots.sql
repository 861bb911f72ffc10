-- Where a visit came from, where the sender is, and whether it is a bot (issue 19), stored as
-- columns because the stats API filters and groups on them (crates/stats-api/src/filters.rs).
-- Written by the gateway into each event (model::acquisition, ingest::geo, ingest::bots);
-- rows stored before this migration keep NULL (and is_bot 0: their bots were counted then).
ALTER TABLE user_events
    ADD COLUMN utm_source      VARCHAR(255) NULL,
    ADD COLUMN utm_medium      VARCHAR(255) NULL,
    ADD COLUMN utm_campaign    VARCHAR(255) NULL,
    ADD COLUMN utm_term        VARCHAR(255) NULL,
    ADD COLUMN utm_content     VARCHAR(255) NULL,
    ADD COLUMN click_id_type   VARCHAR(16)  NULL,
    ADD COLUMN click_id        VARCHAR(255) NULL,
    ADD COLUMN referrer_domain VARCHAR(255) NULL,
    ADD COLUMN channel         VARCHAR(24)  NULL,
    ADD COLUMN country         VARCHAR(2)   NULL,
    ADD COLUMN region          VARCHAR(8)   NULL,
    ADD COLUMN city            VARCHAR(128) NULL,
    -- Kept, flagged, and left out of every aggregate (users, sessions, rollups, Redis) and of
    -- every figure unless a request says include_bots=true.
    ADD COLUMN is_bot          TINYINT(1)   NOT NULL DEFAULT 0;
