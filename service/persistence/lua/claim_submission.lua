--! include: common creates_in_flight
--! argc: 3
--! derives: the task's model, read from its hash
-- An admitted task's submission begins: this attempt becomes the one that may look it up at DashScope
-- and send it, for a lease its holder renews (HOLD_SUBMISSION).
-- ARGV: id, attempt, lease ms
-- Returns 'ok'; 'busy' when another attempt's create of it may still answer (the task is left to that
-- one, on its slot); 'moved' when the task no longer waits.
local id, attempt, lease = ARGV[1], ARGV[2], math.max(tonumber(ARGV[3]), 1)
local status, model = unpack(redis.call('HMGET', TASK .. id, 'status', 'model'))
if status ~= 'queued' then return 'moved' end
local now = clock_ms()
local marker = INFLIGHT .. id
local holder = redis.call('GET', marker)
if holder and holder ~= attempt and park(id, model, now) then return 'busy' end
redis.call('SET', marker, attempt, 'PX', lease)
hold_slot(id, model, now, lease)
return 'ok'
