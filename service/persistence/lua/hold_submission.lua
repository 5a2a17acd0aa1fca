--! include: common creates_in_flight
--! argc: 5
--! derives: the task's model, read from its hash
-- The attempt still holds its task: its marker and slot last at least another lease, and at least until
-- the create's deadline. With an attempt time, the create is about to be sent: recorded on the task, so
-- that a later attempt looks for it at DashScope before sending again.
-- ARGV: id, attempt, lease ms, ms until the create's deadline (0: none yet), attempt time ('': none)
-- Returns 1, or 0 when the attempt no longer holds the task (nothing may be sent then).
local id, attempt = ARGV[1], ARGV[2]
local key = TASK .. id
local marker = INFLIGHT .. id
if redis.call('GET', marker) ~= attempt then return 0 end
local status, model = unpack(redis.call('HMGET', key, 'status', 'model'))
if status ~= 'queued' then return 0 end
local ms = math.max(redis.call('PTTL', marker), tonumber(ARGV[3]), tonumber(ARGV[4]))
redis.call('PEXPIRE', marker, ms)
hold_slot(id, model, clock_ms(), ms)
if ARGV[5] ~= '' then redis.call('HSET', key, 'submit_attempt_at', ARGV[5]) end
return 1
