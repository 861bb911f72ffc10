-- What InsightFlow's two MySQL users may do, on the insightflow database only. No passwords:
-- deploy/mysql/create-users.sh creates the users with passwords from the container's
-- environment, then applies this file. Valid on MySQL 8.0 and MariaDB 10.11/11.
-- crates/worker/tests/least_privilege.rs applies this file to a throwaway database and
-- checks that the worker works with these grants and is refused DDL and other databases.
-- (In a database-level grant `_` and `%` are wildcards: a name with them must escape them.)

-- The worker (consume, serve, the retention job, rebuild-redis) reads and writes rows and
-- nothing else: SELECT (and SELECT ... FOR UPDATE, which also needs UPDATE), INSERT (and
-- INSERT ... ON DUPLICATE KEY UPDATE), UPDATE, DELETE (funnels, the retention job).
-- It runs no DDL: the retention job adds and drops user_events' day partitions by calling the
-- two procedures migration 20261129150000 defines (EXECUTE), which run with the migration
-- user's rights and check what they are asked.
GRANT SELECT, INSERT, UPDATE, DELETE, EXECUTE ON `insightflow`.* TO 'insightflow_worker'@'%';

-- `worker migrate` (the one-shot migrate service): creates the database when it is missing,
-- creates and changes tables and indexes, seeds rows, and keeps sqlx's `_sqlx_migrations`
-- table (CREATE, then SELECT, INSERT, UPDATE, DELETE on it). The rest of the DDL family is
-- granted too, so a later migration (a view, a trigger, a routine) needs no new grant.
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES,
      CREATE TEMPORARY TABLES, LOCK TABLES, CREATE VIEW, SHOW VIEW, TRIGGER,
      CREATE ROUTINE, ALTER ROUTINE, EXECUTE, EVENT
  ON `insightflow`.* TO 'insightflow_migrate'@'%';
