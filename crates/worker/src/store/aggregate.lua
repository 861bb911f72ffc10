-- Applies a batch of events to the Redis aggregates. Each event is applied only when its
-- dedupe mark did not exist: the mark and the updates are set in this one script, which Redis
-- runs atomically, so a redelivered or retried event can never count twice.
--
-- ARGV: prefix, now_ms, dedupe_ttl_s, online_keep_ms, session_ttl_s, minute_keep_s,
--       hour_keep_s, day_keep_s, path_len, path_ttl_s, pages_total_max, writer
--       ('consumer' or 'rebuild'), n_positions,
--       then n_positions pairs (partition field, next offset),
--       then 7 fields per event: project, event_id, distinct_id, event_type, ts_ms, path,
--       session_id ("" when absent). path is "" unless the event is a page view with a path.
-- Returns the number of events applied (the rest were already applied before), or -1 without
-- writing anything when the generation marker does not let this writer write: the consumer
-- writes only while it is 'ready' (when Redis lost its data the marker is gone with it, and
-- counting on top of that would serve a partial total as the truth), the rebuild only while it
-- is 'clearing' (rebuild.rs holds the consumer meanwhile).
-- Key names must match crates/store/src/keys.rs.

local prefix = ARGV[1]
local now_ms = tonumber(ARGV[2])
local dedupe_ttl = tonumber(ARGV[3])
local online_keep_ms = tonumber(ARGV[4])
local session_ttl = tonumber(ARGV[5])
local minute_keep = tonumber(ARGV[6])
local hour_keep = tonumber(ARGV[7])
local day_keep = tonumber(ARGV[8])
local path_len = tonumber(ARGV[9])
local path_ttl = tonumber(ARGV[10])
local pages_total_max = tonumber(ARGV[11])
local writer = ARGV[12]
local n_positions = tonumber(ARGV[13])
local now_s = math.floor(now_ms / 1000)

local generation = redis.call('GET', prefix .. ':generation')
local allowed = (writer == 'consumer' and generation == 'ready')
  or (writer == 'rebuild' and generation == 'clearing')
if not allowed then
  return -1
end

local i = 14
local positions_key = prefix .. ':positions'
for _ = 1, n_positions do
  local field, offset = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local current = tonumber(redis.call('HGET', positions_key, field) or '-1')
  if offset > current then
    redis.call('HSET', positions_key, field, offset)
  end
end

local applied = 0
local touched = {}
while i + 6 <= #ARGV do
  local project, event_id, distinct, event_type = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local ts_ms, path, session = tonumber(ARGV[i + 4]), ARGV[i + 5], ARGV[i + 6]
  i = i + 7
  local base = prefix .. ':' .. project .. ':'
  if redis.call('SET', base .. 'seen:' .. event_id, '1', 'NX', 'EX', dedupe_ttl) then
    applied = applied + 1
    touched[base] = true
    local ts_s = math.floor(ts_ms / 1000)
    local minute, hour, day = math.floor(ts_s / 60), math.floor(ts_s / 3600), math.floor(ts_s / 86400)
    local minute_expiry = (minute + 1) * 60 + minute_keep
    local hour_expiry = (hour + 1) * 3600 + hour_keep
    local day_expiry = (day + 1) * 86400 + day_keep

    redis.call('HINCRBY', base .. 'events:total', event_type, 1)
    -- A late event whose bucket has already expired is counted in MySQL only.
    if minute_expiry > now_s then
      local k = base .. 'events:m:' .. minute
      redis.call('HINCRBY', k, event_type, 1)
      redis.call('EXPIREAT', k, minute_expiry)
    end
    if hour_expiry > now_s then
      local k = base .. 'events:h:' .. hour
      redis.call('HINCRBY', k, event_type, 1)
      redis.call('EXPIREAT', k, hour_expiry)
      -- Unique users are HyperLogLog estimates (12 KiB a key at most, whatever the traffic);
      -- adding an id twice changes nothing, so a replayed event cannot double them either.
      k = base .. 'uv:h:' .. hour
      redis.call('PFADD', k, distinct)
      redis.call('EXPIREAT', k, hour_expiry)
    end
    if day_expiry > now_s then
      local k = base .. 'uv:d:' .. day
      redis.call('PFADD', k, distinct)
      redis.call('EXPIREAT', k, day_expiry)
    end

    if ts_ms > now_ms - online_keep_ms then
      redis.call('ZADD', base .. 'online', 'GT', ts_ms, distinct)
    end

    if path ~= '' then
      redis.call('ZINCRBY', base .. 'pages:total', 1, path)
      if hour_expiry > now_s then
        local k = base .. 'pages:h:' .. hour
        redis.call('ZINCRBY', k, 1, path)
        redis.call('EXPIREAT', k, hour_expiry)
      end
      if day_expiry > now_s then
        local k = base .. 'pages:d:' .. day
        redis.call('ZINCRBY', k, 1, path)
        redis.call('EXPIREAT', k, day_expiry)
      end
    end

    if session ~= '' and ts_ms > now_ms - session_ttl * 1000 then
      local k = base .. 'session:' .. session
      redis.call('HSETNX', k, 'user', distinct)
      redis.call('HSETNX', k, 'started_ms', ts_ms)
      redis.call('HINCRBY', k, 'events', 1)
      local last = tonumber(redis.call('HGET', k, 'last_seen_ms') or '0')
      if ts_ms > last then
        redis.call('HSET', k, 'last_seen_ms', ts_ms)
        if path ~= '' then
          redis.call('HSET', k, 'last_path', path)
        end
      end
      redis.call('EXPIRE', k, session_ttl)
      redis.call('ZADD', base .. 'sessions:active', 'GT', ts_ms, session)
    end

    local recent = base .. 'path:' .. distinct
    redis.call('LPUSH', recent, ts_ms .. '|' .. event_type .. '|' .. path)
    redis.call('LTRIM', recent, 0, path_len - 1)
    redis.call('EXPIRE', recent, path_ttl)

    local meta = base .. 'meta'
    local newest = tonumber(redis.call('HGET', meta, 'newest_event_ms') or '0')
    if ts_ms > newest then
      redis.call('HSET', meta, 'newest_event_ms', ts_ms)
    end
    redis.call('HINCRBY', meta, 'applied_events', 1)
  end
end

-- Keep windowed sets bounded: trim what fell out of the window, expire what went idle.
for base, _ in pairs(touched) do
  local online = base .. 'online'
  redis.call('ZREMRANGEBYSCORE', online, '-inf', '(' .. (now_ms - online_keep_ms))
  redis.call('PEXPIRE', online, online_keep_ms)
  local active = base .. 'sessions:active'
  redis.call('ZREMRANGEBYSCORE', active, '-inf', '(' .. (now_ms - session_ttl * 1000))
  redis.call('EXPIRE', active, session_ttl)
  local pages = base .. 'pages:total'
  local n = redis.call('ZCARD', pages)
  if n > pages_total_max then
    redis.call('ZREMRANGEBYRANK', pages, 0, n - pages_total_max - 1)
  end
end
return applied
