--! keys: 5
--! argc: 7
-- Record an attempt's outcome and schedule the next (delay_ms >= 0) or none (-1). A delivery that is
-- dead is written to the callbacks' dead-letter stream in the same step, with its cause.
-- KEYS: the task's hash, its deliveries (keys.TASK, keys.DELIVERIES + task id), keys.CALLBACKS_DUE,
--   keys.CALLBACK_DEAD, keys.COUNTERS (scripts.settle_callback_keys)
-- ARGV: task id, webhook id, delivery JSON, delay ms, and for a dead one: attempts, cause, now
-- The fixed keys go by keys.py's names.
local task_key, deliveries_key, CALLBACKS_DUE, CALLBACK_DEAD, COUNTERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', task_key) == 0 then
  -- The task was deleted while this attempt was on its way: nothing of it is written back.
  redis.call('ZREM', CALLBACKS_DUE, ARGV[2])
  return 0
end
redis.call('HSET', deliveries_key, ARGV[2], ARGV[3])
if ARGV[5] then
  redis.call('XADD', CALLBACK_DEAD, 'MAXLEN', '~', DEAD_JOBS_MAXLEN, '*', 'kind', 'callback', 'task', ARGV[1],
    'job', ARGV[2], 'deliveries', ARGV[5], 'cause', ARGV[6], 'at', ARGV[7])
  redis.call('HINCRBY', COUNTERS, 'jobs_dead_lettered|kind=callback', 1)
end
local delay = tonumber(ARGV[4])
if delay < 0 then
  redis.call('ZREM', CALLBACKS_DUE, ARGV[2])
else
  local clock = redis.call('TIME')
  redis.call('ZADD', CALLBACKS_DUE, clock[1] * 1000 + math.floor(clock[2] / 1000) + delay, ARGV[2])
end
return 1
