--! keys: 1
--! argc: 2
-- The attempt ends without an answer recorded (MARK_SUBMITTED and REQUEUE end it otherwise): its marker
-- goes, or lasts until its create's deadline when one may still answer.
-- KEYS: the task's in-flight marker (keys.INFLIGHT + id); ARGV: attempt, ms to keep (0: none)
local marker = KEYS[1]
if redis.call('GET', marker) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', marker, ARGV[2]) else redis.call('DEL', marker) end
return 1
