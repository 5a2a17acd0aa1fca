"""The Lua scripts behind every state change: each runs atomically inside Redis.

A state only moves forward (queued < submitted < downloading < terminal); whatever order or number
of times events arrive, a script either applies a change whole, with its side effects (index,
change stream, next job), or leaves everything as it was.
"""

# Shared by every script: ARGV[1] is the key prefix.
COMMON = """
local prefix = ARGV[1]
local RANK = {queued = 0, submitted = 1, downloading = 2, ready = 3, failed = 3, canceled = 3, expired = 3}

local function transition(id, to, now, fields)
  local key = prefix .. ':task:' .. id
  local current = redis.call('HGET', key, 'status')
  if not current then return 'missing' end
  if RANK[to] <= RANK[current] then return 'stale' end
  local member = redis.call('HGET', key, 'created_ms') .. ':' .. id
  redis.call('ZREM', prefix .. ':tasks:' .. current, member)
  redis.call('ZADD', prefix .. ':tasks:' .. to, 0, member)
  redis.call('HSET', key, 'status', to, 'updated_at', now, unpack(fields))
  redis.call('XADD', prefix .. ':changes:' .. id, 'MAXLEN', '~', 1000, '*', 'status', to, 'at', now)
  return 'ok'
end

local function error_json(code, message)
  return cjson.encode({code = code, message = message})
end

-- What a completion event means for a known task.
local function apply(id, status, now, video_url, code, message)
  if status == 'SUCCEEDED' then
    local fields = {'ds_status', status}
    if video_url ~= '' then
      fields[3] = 'video_url'
      fields[4] = video_url
    end
    local result = transition(id, 'downloading', now, fields)
    if result == 'ok' then
      redis.call('XADD', prefix .. ':jobs:download', '*', 'task', id)
    end
    return result
  elseif status == 'FAILED' then
    if code == '' then code = 'TaskFailed' end
    if message == '' then message = 'DashScope reported the task FAILED' end
    return transition(id, 'failed', now, {'ds_status', status, 'error', error_json(code, message)})
  elseif status == 'CANCELED' then
    return transition(id, 'canceled', now, {'ds_status', status})
  elseif status == 'UNKNOWN' then
    return transition(id, 'expired', now, {'ds_status', status, 'error', error_json('TaskExpired',
      'DashScope no longer knows the task (UNKNOWN): it expired before the video was stored')})
  end
  return 'stale'
end
"""

# ARGV: prefix, id, idempotency key ('' for none), idempotency ttl, created_ms, now, field, value, ...
CREATE = COMMON + """
local id, idem_key, idem_ttl, created_ms, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if idem_key ~= '' then
  local existing = redis.call('GET', prefix .. ':idem:' .. idem_key)
  if existing then return existing end
  redis.call('SET', prefix .. ':idem:' .. idem_key, id, 'EX', idem_ttl)
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local member = created_ms .. ':' .. id
redis.call('HSET', prefix .. ':task:' .. id, 'id', id, 'status', 'queued', 'created_ms', created_ms,
  'created_at', now, 'updated_at', now, unpack(fields))
redis.call('ZADD', prefix .. ':tasks', 0, member)
redis.call('ZADD', prefix .. ':tasks:queued', 0, member)
redis.call('XADD', prefix .. ':changes:' .. id, 'MAXLEN', '~', 1000, '*', 'status', 'queued', 'at', now)
redis.call('XADD', prefix .. ':jobs:submit', '*', 'task', id)
redis.call('HINCRBY', prefix .. ':counters', 'tasks_created', 1)
return id
"""

# ARGV: prefix, id, to, now, field, value, ...
TRANSITION = COMMON + """
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local result = transition(ARGV[2], ARGV[3], ARGV[4], fields)
if result == 'ok' then redis.call('HINCRBY', prefix .. ':counters', 'transitions_' .. ARGV[3], 1) end
return result
"""

# DashScope accepted the task. An event that raced ahead of this answer is applied now.
# ARGV: prefix, id, DashScope task id, DashScope status, request id, now
MARK_SUBMITTED = COMMON + """
local id, ds_id, now = ARGV[2], ARGV[3], ARGV[6]
local result = transition(id, 'submitted', now, {'ds_task_id', ds_id, 'ds_status', ARGV[4], 'ds_request_id', ARGV[5]})
redis.call('SET', prefix .. ':ds:' .. ds_id, id)
if result == 'ok' then redis.call('HINCRBY', prefix .. ':counters', 'transitions_submitted', 1) end
local early_key = prefix .. ':early:' .. ds_id
local early = redis.call('GET', early_key)
if early then
  local event = cjson.decode(early)
  apply(id, event.status, now, event.video_url, event.code, event.message)
  redis.call('DEL', early_key)
  redis.call('HINCRBY', prefix .. ':counters', 'events_early_applied', 1)
end
return result
"""

# One completion event, recorded and applied in one step: dedupe, audit log, transition, next job.
# ARGV: prefix, source, event id, DashScope task id, status, now, video url, code, message, foreign (0/1),
#       seen ttl, early ttl, log maxlen, raw body
INGEST = COMMON + """
local source, event_id, ds_id, status, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local video_url, code, message, foreign = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
-- Reads before writes: a script that fails half-way keeps what it already wrote, so nothing is
-- written until every read has succeeded.
local seen_key = prefix .. ':seen:' .. source .. ':' .. event_id
local outcome
local task_id = ''
if redis.call('EXISTS', seen_key) == 1 then
  outcome = 'duplicate'
elseif foreign == '1' then
  outcome = 'ignored'
else
  task_id = redis.call('GET', prefix .. ':ds:' .. ds_id) or ''
  if task_id == '' then
    -- Either the create call has not returned yet, or the task is not wanhook's. Keep it aside.
    redis.call('SET', prefix .. ':early:' .. ds_id, cjson.encode({status = status, video_url = video_url,
      code = code, message = message}), 'EX', ARGV[12])
    outcome = 'unknown_task'
  elseif apply(task_id, status, now, video_url, code, message) == 'ok' then
    outcome = 'applied'
  else
    outcome = 'stale'
  end
end
if outcome ~= 'duplicate' then redis.call('SET', seen_key, '1', 'EX', ARGV[11]) end
redis.call('XADD', prefix .. ':events', 'MAXLEN', '~', ARGV[13], '*', 'source', source, 'id', event_id,
  'ds_task_id', ds_id, 'status', status, 'task', task_id, 'outcome', outcome, 'body', ARGV[14])
redis.call('HINCRBY', prefix .. ':counters', 'events_' .. outcome, 1)
return {outcome, task_id}
"""

# Keep holding a job only if this consumer still owns it (another may have reclaimed it).
# KEYS: stream; ARGV: group, consumer, entry id
HOLD_JOB = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""
