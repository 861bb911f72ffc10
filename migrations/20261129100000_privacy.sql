-- Privacy (issue 20): a person can be erased and suppressed. Neither table names the person:
-- both hold the SHA-256 of the distinct id (hex), which is enough to recognise their later
-- events and to prove which request an audit line answers, and nothing more.

-- People whose events are dropped from now on: erased ones, and ones who opted out.
-- The worker reads this in the transaction that stores a batch (a locking read), so an
-- erasure either sees the batch's rows and deletes them, or the batch sees the suppression.
CREATE TABLE suppressed_people (
    project        VARCHAR(64) NOT NULL,
    person_sha256  CHAR(64)    NOT NULL,
    -- erased | opted_out
    reason         VARCHAR(16) NOT NULL,
    since          DATETIME(3) NOT NULL,
    PRIMARY KEY (project, person_sha256)
) ENGINE = InnoDB DEFAULT CHARSET = ascii COLLATE = ascii_bin;

-- Every erasure: who asked (a key fingerprint, never the key), when, and what went.
CREATE TABLE person_erasures (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    project          VARCHAR(64)     NOT NULL,
    person_sha256    CHAR(64)        NOT NULL,
    requested_by     VARCHAR(64)     NOT NULL,
    requested_at     DATETIME(3)     NOT NULL,
    events_deleted   BIGINT UNSIGNED NOT NULL,
    sessions_deleted BIGINT UNSIGNED NOT NULL,
    profile_deleted  BOOLEAN         NOT NULL,
    redis_deleted    BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (id),
    KEY ix_person_erasures_time (project, requested_at)
) ENGINE = InnoDB DEFAULT CHARSET = ascii COLLATE = ascii_bin;

-- Erasure finds a person's sessions by their id (sessions are keyed by session id).
CREATE INDEX ix_sessions_user ON sessions (project, distinct_id);
