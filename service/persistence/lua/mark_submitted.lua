--! include: common
--! argc: 9
--! derives: the slots of the task's model, read from its hash; an early event's task keys
-- DashScope accepted the task: it holds a slot of its model until its completion event, and the
-- sweeper watches it from its deadline on. An event that raced ahead of this answer is applied now.
-- The answer may come late, for a task that has moved on meanwhile: adopted while the task still waits
-- (queued again, not yet recorded), the same DashScope task found by listing meanwhile, a task its user
-- canceled (the caller cancels at DashScope: the user asked), or else an orphan: left running, recorded,
-- counted. wanhook cancels nothing its user did not ask to cancel.
-- ARGV: id, DashScope task id, DashScope status, request id, now, slot lease ms, sweep after ms,
--       adopt (1: the task was found by listing, and must not be another wanhook task's),
--       attempt (the submission attempt whose create this answers; its in-flight marker ends here)
-- Returns 'ok', 'same', 'canceled', 'orphan', 'missing', or with adopt 'taken' (another task's) or 'moved'
-- (the task no longer waits: nothing to adopt for).
local id, ds_id, now, adopt, attempt = ARGV[1], ARGV[2], ARGV[5], ARGV[8] == '1', ARGV[9] or ''
local key = TASK .. id
local ds_key = DASHSCOPE_TASK .. ds_id
local status, current = unpack(redis.call('HMGET', key, 'status', 'ds_task_id'))
if not status then
  if redis.call('EXISTS', DELETED .. id) == 1 then
    -- Its user deleted it while the create was in flight: as for a canceled task, the caller cancels
    -- it at DashScope; its late events find a task that is gone (stale), and no early record is kept.
    redis.call('SET', ds_key, id, 'EX', math.max(redis.call('TTL', DELETED .. id), 1))
    redis.call('DEL', EARLY_EVENT .. ds_id)
    redis.call('ZREM', EARLY_EVENTS, ds_id)
    return 'canceled'
  end
  return 'missing'
end
if adopt then
  if status ~= 'queued' then return 'moved' end
  if redis.call('EXISTS', ds_key) == 1 or redis.call('HEXISTS', ORPHANS, ds_id) == 1 then
    return 'taken'
  end
end
-- The attempt's create has answered (or its task was found): nothing of it is in flight any more.
local marker_key = INFLIGHT .. id
if attempt ~= '' and redis.call('GET', marker_key) == attempt then redis.call('DEL', marker_key) end
if status ~= 'queued' then
  if current == ds_id then return 'same' end
  if status == 'canceled' then
    -- Mapped when the task has no DashScope task of its own, so that the late events are stale, not unknown.
    if not current then redis.call('SET', ds_key, id) end
    return 'canceled'
  end
  redis.call('HSET', ORPHANS, ds_id, cjson.encode({task = id, status = status, at = now}))
  redis.call('HINCRBY', COUNTERS, 'submissions_orphaned', 1)
  return 'orphan'
end
local result = transition(id, 'submitted', now, {'ds_task_id', ds_id, 'ds_status', ARGV[3], 'ds_request_id', ARGV[4]})
if result ~= 'ok' then return result end
redis.call('SET', ds_key, id)
local clock = redis.call('TIME')
local ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
local model = redis.call('HGET', key, 'model')
redis.call('ZADD', SLOTS .. model, ms + tonumber(ARGV[6]), id)
redis.call('ZADD', SWEEP, ms + tonumber(ARGV[7]), id)
redis.call('HINCRBY', COUNTERS, 'transitions_submitted', 1)
local early_key = EARLY_EVENT .. ds_id
local early = redis.call('GET', early_key)
if early then
  local event = cjson.decode(early)
  apply(id, event.status, now, event.video_url, event.code, event.message)
  redis.call('DEL', early_key)
  redis.call('HINCRBY', COUNTERS, 'events_early_applied', 1)
end
redis.call('ZREM', EARLY_EVENTS, ds_id)
return result
