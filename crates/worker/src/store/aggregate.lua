-- Applies one chunk of a batch to the Redis aggregates, atomically (Redis runs a script
-- alone), or writes nothing.
--
-- The worker has already turned the chunk's events into commands, one per key and field
-- (crates/worker/src/store/aggregates.rs, keys from crates/store/src/keys.rs). What makes them
-- count exactly once is checked here, before anything is written:
--  * the generation marker: the consumer writes only while it is 'ready' (when Redis lost its
--    data the marker is gone with it, and counting on top of that would serve a partial total
--    as the truth), the rebuild only while it is 'clearing' (rebuild.rs holds the consumer
--    meanwhile). Otherwise: -1.
--  * the positions ({prefix}:positions, 'topic/partition' -> next offset): every message of
--    the chunk must be at or past its partition's position. One below it was applied before
--    (a redelivery, or another member's batch around a rebalance): then nothing is written,
--    and the reply lists the failed guards' positions, so the worker drops those messages
--    and tries again.
-- Then the commands run, and the positions move forward (never back).
--
-- ARGV: prefix, writer ('consumer' or 'rebuild'),
--       n_guards, then n_guards pairs (position field, offset of the chunk's first message),
--       n_advances, then n_advances pairs (position field, next offset),
--       then the commands, each as: name, number of arguments, arguments.
-- Besides Redis commands: HSETGT key field value [field2 value2]: sets field (and field2)
-- when value is greater than the field's current number (or the field is missing).
-- Returns the number of commands run, -1, or the list of failed guards (field, position...).

local prefix = ARGV[1]
local writer = ARGV[2]

local generation = redis.call('GET', prefix .. ':generation')
local allowed = (writer == 'consumer' and generation == 'ready')
  or (writer == 'rebuild' and generation == 'clearing')
if not allowed then
  return -1
end

local positions = prefix .. ':positions'
local i = 3
local n_guards = tonumber(ARGV[i])
i = i + 1
local failed = {}
for _ = 1, n_guards do
  local field, first = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local current = redis.call('HGET', positions, field)
  if current and tonumber(current) > first then
    failed[#failed + 1] = field
    failed[#failed + 1] = current
  end
end
if #failed > 0 then
  return failed
end

local n_advances = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_advances do
  local field, offset = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local current = tonumber(redis.call('HGET', positions, field) or '-1')
  if offset > current then
    redis.call('HSET', positions, field, offset)
  end
end

local run = 0
local last = #ARGV
while i <= last do
  local name, n = ARGV[i], tonumber(ARGV[i + 1])
  local from, to = i + 2, i + 1 + n
  i = to + 1
  if name == 'HSETGT' then
    local key, field, value = ARGV[from], ARGV[from + 1], tonumber(ARGV[from + 2])
    local current = tonumber(redis.call('HGET', key, field) or '-1')
    if value > current then
      redis.call('HSET', key, unpack(ARGV, from + 1, to))
    end
  else
    redis.call(name, unpack(ARGV, from, to))
  end
  run = run + 1
end
return run
