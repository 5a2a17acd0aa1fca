--! include: common
--! argc: 4
--! derives: the task's keys when it is ended failed (transition, common.lua)
-- The sweeper's look at a task in `downloading` that no download job names (a job lost: nothing else
-- would ever end the task). The first look marks when it was found so; a look at least bound ms later
-- that finds it so still queues a job again, at most max times, and after that ends the task failed
-- (job_lost). A task that has a job again, or has moved on, is left as it is.
-- ARGV: task id, bound ms, max requeues, now
-- Returns 'marked', 'waiting', 'requeued', 'failed' or 'moved'.
local id, bound, most, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local key = TASK .. id
local status, since, requeues = unpack(redis.call('HMGET', key, 'status', 'job_missing_ms', 'job_requeues'))
if status ~= 'downloading' then return 'moved' end
local clock = redis.call('TIME')
local now_ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
if not since then
  redis.call('HSET', key, 'job_missing_ms', now_ms)
  return 'marked'
end
if now_ms - tonumber(since) < bound then return 'waiting' end
requeues = tonumber(requeues or '0')
if requeues >= most then
  transition(id, 'failed', now, {'error', cjson.encode({code = 'job_lost',
    message = 'the download job was lost ' .. (requeues + 1) .. ' times; the sweeper gave the task up'})})
  return 'failed'
end
redis.call('HSET', key, 'job_requeues', requeues + 1)
redis.call('HDEL', key, 'job_missing_ms')
redis.call('XADD', DOWNLOAD_JOBS, '*', 'task', id)
redis.call('HINCRBY', COUNTERS, 'jobs_requeued_by_sweeper', 1)
return 'requeued'
