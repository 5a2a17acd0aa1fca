--! include: common creates_in_flight
--! argc: 3
--! derives: the task's model and owner, read from its hash
-- The create call did not go through (throttled, DashScope failing): the task goes back to the head of
-- its queue, gives back its slot, and the model pauses before anything else is sent. The attempt's
-- in-flight marker ends; a create that may still answer (another attempt's, or this one's when the
-- caller cannot tell whether it was sent: attempt '') keeps the task on its slot until it no longer can.
-- ARGV: id, pause ms, attempt ('' for unknown)
local id, attempt = ARGV[1], ARGV[3] or ''
local task = redis.call('HMGET', TASK .. id, 'status', 'model', 'owner')
if task[1] ~= 'queued' then return 0 end
local marker = INFLIGHT .. id
if attempt ~= '' and redis.call('GET', marker) == attempt then redis.call('DEL', marker) end
if tonumber(ARGV[2]) > 0 then redis.call('SET', PAUSE .. task[2], '1', 'PX', ARGV[2]) end
if park(id, task[2], clock_ms()) then return 0 end
redis.call('ZREM', SLOTS .. task[2], id)
enqueue(id, task[2], task[3] or '', true)
wake()
return 1
