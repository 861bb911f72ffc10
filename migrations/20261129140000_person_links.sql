-- Identity stitching (issue 20): an id a client sent before it knew the user (an anonymous
-- id, or the previous id of an alias) linked to the person (user id) it turned out to be.
-- Written by the worker in the transaction that stores the identify or alias event, together
-- with the back-fill that moves the linked id's rows (events, sessions, profile) to the person;
-- every later event whose distinct id is linked is stored under the person. One row per linked
-- id: the first link of an id wins, and an id that is a user id is never linked (the worker
-- counts refusals in worker_identity_links_refused_total). Erasing the person deletes the rows.
CREATE TABLE person_links (
    project      VARCHAR(64)  NOT NULL,
    -- The linked id, as the client sent it.
    distinct_id  VARCHAR(255) NOT NULL,
    -- The person: a user id, never itself a linked id (links are one step).
    person_id    VARCHAR(255) NOT NULL,
    -- The event time of the identify or alias that made the link.
    linked_at    DATETIME(3)  NOT NULL,
    by_event_id  VARCHAR(128) NOT NULL,
    PRIMARY KEY (project, distinct_id),
    KEY ix_person_links_person (project, person_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
