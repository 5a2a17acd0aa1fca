--! include: common creates_in_flight
--! argc: 5
--! derives: the queue of the submitter whose turn it is (the rotation's head), the tasks of expired leases
-- Which queued task of a model may go to DashScope now, if any. Both of DashScope's per-model limits
-- are kept here, for every process at once, on Redis' clock: tasks running (slots, each a lease that
-- expires so a dead process cannot leak one) and submissions per second (a sliding window).
-- ARGV: model, submissions per window, running, window ms, reservation lease ms
-- Returns {task id, 0} or {'', ms to wait (-1: until woken)}.
local model, rate, running, window, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local slots = SLOTS .. model
for _, id in ipairs(redis.call('ZRANGEBYSCORE', slots, '-inf', now)) do
  -- A lease ran out: its holder died before DashScope answered (or its events were lost for longer
  -- than the sweeper allows). A task still queued goes back to the head of its queue, once no create
  -- of it can answer any more (a holder that stopped renewing may still be waiting for one).
  local task = redis.call('HMGET', TASK .. id, 'status', 'owner')
  if not (task[1] == 'queued' and park(id, model, now)) then
    redis.call('ZREM', slots, id)
    if task[1] == 'queued' then enqueue(id, model, task[2] or '', true) end
    redis.call('HINCRBY', COUNTERS, 'slots_recovered', 1)
  end
end
local paused = redis.call('PTTL', PAUSE .. model)
if paused > 0 then return {'', paused} end
local rotation = ROTATION .. model
if redis.call('LLEN', rotation) == 0 then return {'', -1} end
if redis.call('ZCARD', slots) >= running then
  local first = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
  return {'', math.max(1, tonumber(first[2]) - now)}
end
local rate_key = SUBMIT_RATE .. model
redis.call('ZREMRANGEBYSCORE', rate_key, '-inf', now - window)
if redis.call('ZCARD', rate_key) >= rate then
  local oldest = redis.call('ZRANGE', rate_key, 0, 0, 'WITHSCORES')
  return {'', math.max(1, tonumber(oldest[2]) + window - now)}
end
while true do
  local owner = redis.call('LPOP', rotation)
  if not owner then return {'', -1} end
  local queue = queue_of(model, owner)
  local id = redis.call('LPOP', queue)
  if redis.call('LLEN', queue) > 0 then redis.call('RPUSH', rotation, owner) end
  if id and redis.call('HGET', TASK .. id, 'status') == 'queued' then
    if not park(id, model, now) then
      redis.call('ZADD', slots, now + lease, id)
      redis.call('ZADD', rate_key, now, id)
      redis.call('PEXPIRE', rate_key, window * 2)
      return {id, 0}
    end
    -- Put back while a create of it was in flight (a submission Redis broke off): it waits on its slot
    -- until that create can no longer answer, which may leave the model without a free slot.
    if redis.call('ZCARD', slots) >= running then
      local first = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
      return {'', math.max(1, tonumber(first[2]) - now)}
    end
  end
end
