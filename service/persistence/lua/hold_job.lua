--! keys: 1
--! argc: 3
-- Keep holding a job only if this consumer still owns it (another may have reclaimed it).
-- KEYS: stream; ARGV: group, consumer, entry id
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
