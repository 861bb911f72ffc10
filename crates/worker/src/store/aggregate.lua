-- Applies one chunk of one project's events to its Redis aggregates, atomically (Redis runs
-- a script alone), or writes nothing. Every key it touches carries the project's hash tag
-- (crates/store/src/keys.rs), so on Redis Cluster they are all in one slot.
--
-- The worker has already turned the chunk's events into commands, one per key and field
-- (crates/worker/src/store/aggregates.rs). What makes them count exactly once is checked here,
-- before anything is written:
--  * the project's generation marker (KEYS[1]): the consumer writes only while it is 'ready'
--    (when the project's node lost its data the marker is gone with it, and counting on top
--    of that would serve a partial total as the truth); a project the consumer has just
--    registered as new (ARGV[3] = '1', see redis.rs) gets its marker here. The rebuild writes
--    while it is missing or 'clearing:...', and makes it 'clearing:<its lock token>'.
--    Otherwise: -1 (marker there, not for this writer) or -2 (no marker, not new).
--  * the project's positions (KEYS[2], 'topic/partition' -> next offset): every message of
--    the chunk must be at or past its partition's position. One below it was applied before
--    (a redelivery, or another member's batch around a rebalance): then nothing is written,
--    and the reply lists the failed guards' positions, so the worker drops those messages
--    and tries again.
-- Then the commands run, and the positions move forward (never back).
--
-- KEYS: the project's marker, the project's positions.
-- ARGV: writer ('consumer' or 'rebuild'), the rebuild's lock token (or ''), new project ('1'
--       or '0'), n_guards, then n_guards pairs (position field, offset of the chunk's first
--       message), n_advances, then n_advances pairs (position field, next offset),
--       then the commands, each as: name, number of arguments, arguments.
-- Besides Redis commands: HSETGT key field value [field2 value2]: sets field (and field2)
-- when value is greater than the field's current number (or the field is missing).
-- Returns the number of commands run, -1, -2, or the list of failed guards (field, position...).

local marker, positions = KEYS[1], KEYS[2]
local writer, token, new_project = ARGV[1], ARGV[2], ARGV[3]

local generation = redis.call('GET', marker)
if writer == 'consumer' then
  if not generation and new_project == '1' then
    redis.call('SET', marker, 'ready')
    generation = 'ready'
  end
  if generation ~= 'ready' then
    if generation then
      return -1
    end
    return -2
  end
elseif writer == 'rebuild' then
  local mine = 'clearing:' .. token
  if generation and string.sub(generation, 1, 8) ~= 'clearing' then
    return -1
  end
  if generation ~= mine then
    redis.call('SET', marker, mine)
  end
else
  return -1
end

local i = 4
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
