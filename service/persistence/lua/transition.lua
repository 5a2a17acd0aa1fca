--! include: common
--! argc: 3+
--! derives: the task's model, owner and deliveries, read from its hash (common.lua)
-- ARGV: id, to, now, field, value, ...
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local result = transition(ARGV[1], ARGV[2], ARGV[3], fields)
if result == 'ok' then redis.call('HINCRBY', COUNTERS, 'transitions_' .. ARGV[2], 1) end
return result
