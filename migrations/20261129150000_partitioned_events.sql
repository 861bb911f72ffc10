-- Time-partitioned raw events (issue 21 item 2): user_events is partitioned by the day of its
-- event time, and retention drops whole days (crates/worker/src/retention.rs) instead of
-- deleting rows one chunk at a time.
--
-- MariaDB wants every unique key of a partitioned table to include the partitioning column,
-- and event_time is not stable across a client's retries (the gateway corrects it with the
-- request's sent_at), so UNIQUE (project, event_id) cannot stay on user_events and cannot take
-- event_time in. What stores an event once is now event_ids: one narrow row per stored event,
-- inserted in the batch's transaction before the raw row, with the message that stored it
-- (its origin, which Redis's exactly-once reads: crates/worker/src/store/mysql.rs). The
-- retention job deletes its rows past the same cutoff as the raw events, in chunks, before
-- it drops their days.
CREATE TABLE event_ids (
    project         VARCHAR(64)  NOT NULL,
    event_id        VARCHAR(128) NOT NULL,
    -- The event time of the stored copy (the raw row's), which decides its expiry.
    event_time      DATETIME(3)  NOT NULL,
    kafka_partition INT          NULL,
    kafka_offset    BIGINT       NULL,
    PRIMARY KEY (project, event_id),
    KEY ix_event_ids_time (event_time)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Every stored event keeps its dedupe row and its origin (NULL for rows stored before origins
-- were recorded: the worker then falls back to their Redis marks, as before).
INSERT INTO event_ids (project, event_id, event_time, kafka_partition, kafka_offset)
SELECT project, event_id, event_time, kafka_partition, kafka_offset FROM user_events;

-- One partition per day, p<YYYYMMDD> holding event times before the next day's midnight (UTC),
-- from the day of the oldest stored event (at most 1000 days back: anything older shares the
-- first partition) to 7 days ahead, then pmax (MAXVALUE), which takes whatever is later, so
-- no insert ever fails for lack of a partition. The retention job keeps the days through
-- today + 7 by splitting pmax (REORGANIZE PARTITION pmax INTO (...)), and drops the days
-- wholly past retention.
SET @first_day = (SELECT LEAST(GREATEST(COALESCE(DATE(MIN(event_time)), UTC_DATE()),
    UTC_DATE() - INTERVAL 1000 DAY), UTC_DATE()) FROM user_events);
SET @last_day = UTC_DATE() + INTERVAL 7 DAY;

WITH RECURSIVE days (d) AS (
    SELECT @first_day
    UNION ALL
    SELECT d + INTERVAL 1 DAY FROM days WHERE d < @last_day
)
SELECT GROUP_CONCAT(
    CONCAT('PARTITION p', DATE_FORMAT(d, '%Y%m%d'),
        ' VALUES LESS THAN (TO_DAYS(''', d + INTERVAL 1 DAY, '''))')
    ORDER BY d SEPARATOR ', ')
INTO @day_partitions FROM days;

-- One table copy: the unique key goes (event_ids holds it now; a plain index keeps the lookups
-- by event id), the primary key takes event_time (id stays first: AUTO_INCREMENT, and every
-- lookup by id uses it), and the table is partitioned.
SET @partition_events = CONCAT(
    'ALTER TABLE user_events ',
    'DROP INDEX uq_user_events_event, ',
    'ADD INDEX ix_user_events_event (project, event_id), ',
    'DROP PRIMARY KEY, ADD PRIMARY KEY (id, event_time) ',
    'PARTITION BY RANGE (TO_DAYS(event_time)) (', @day_partitions,
    ', PARTITION pmax VALUES LESS THAN MAXVALUE)');
PREPARE partition_events FROM @partition_events;
EXECUTE partition_events;
DEALLOCATE PREPARE partition_events;

-- The worker user runs no DDL (deploy/mysql/grants.sql): it changes partitions through these
-- two procedures, which run with their definer's rights (the migration user's) and do one
-- thing each, checked. Neither lets it do more than its DELETE on rows already could.

-- Splits the day `day` off pmax (REORGANIZE PARTITION pmax INTO (p<day>, pmax)): `day` must
-- follow the last day partition and be at most 60 days ahead.
CREATE PROCEDURE user_events_add_day(IN day DATE)
    SQL SECURITY DEFINER
BEGIN
    IF day IS NULL OR day > UTC_DATE() + INTERVAL 60 DAY THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'user_events_add_day: day is more than 60 days ahead';
    END IF;
    SET @user_events_add_day = CONCAT(
        'ALTER TABLE user_events REORGANIZE PARTITION pmax INTO (PARTITION p',
        DATE_FORMAT(day, '%Y%m%d'), ' VALUES LESS THAN (', TO_DAYS(day + INTERVAL 1 DAY),
        '), PARTITION pmax VALUES LESS THAN MAXVALUE)');
    PREPARE add_day FROM @user_events_add_day;
    EXECUTE add_day;
    DEALLOCATE PREPARE add_day;
END;

-- Drops the day partition `name` (p<YYYYMMDD>), which must hold only event times before today.
CREATE PROCEDURE user_events_drop_day(IN name VARCHAR(16))
    SQL SECURITY DEFINER
BEGIN
    DECLARE bound VARCHAR(64);
    SELECT CAST(PARTITION_DESCRIPTION AS CHAR) INTO bound
    FROM information_schema.PARTITIONS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'user_events' AND PARTITION_NAME = name
        AND name REGEXP '^p[0-9]{8}$';
    IF bound IS NULL OR bound = 'MAXVALUE' OR CAST(bound AS UNSIGNED) > TO_DAYS(UTC_DATE()) THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'user_events_drop_day: not a day partition wholly before today';
    END IF;
    SET @user_events_drop_day = CONCAT('ALTER TABLE user_events DROP PARTITION ', name);
    PREPARE drop_day FROM @user_events_drop_day;
    EXECUTE drop_day;
    DEALLOCATE PREPARE drop_day;
END;
