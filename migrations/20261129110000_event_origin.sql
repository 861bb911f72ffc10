-- Exactly once in Redis without a dedupe mark per event (crates/worker/src/store/mod.rs).
--
-- Each stored event remembers the Kafka message that stored it (its origin). A redelivered
-- message whose event is already stored was applied to Redis by that same message, or not
-- yet: Redis tells which by its position per partition. A message whose event another message
-- stored (a client's retry) is a duplicate. Rows stored before this migration have no origin;
-- the worker falls back to their Redis dedupe marks for those.
ALTER TABLE user_events
    ADD COLUMN kafka_partition INT    NULL,
    ADD COLUMN kafka_offset    BIGINT NULL;

-- What MySQL has processed of each partition, in the transaction of the batch that got there:
-- every message below next_offset has its event stored (or was a duplicate, or was refused).
-- Written with every batch; a Redis rebuild sets Redis's positions from the same snapshot as
-- the events it replays, so the consumer applies exactly the events the snapshot lacks.
CREATE TABLE kafka_positions (
    topic           VARCHAR(249) NOT NULL,
    kafka_partition INT          NOT NULL,
    next_offset     BIGINT       NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- (project, event_time) is the prefix of ix_user_events_time_user (project, event_time,
-- distinct_id), which serves every query it served; one index less to maintain per insert.
DROP INDEX ix_user_events_time ON user_events;

-- No query reads users by last_seen (profiles are read by distinct id, cohorts by first_seen
-- from the rows): the index only cost a delete and an insert per person and batch, as
-- last_seen moves with every batch that has their events.
DROP INDEX ix_users_last_seen ON users;
