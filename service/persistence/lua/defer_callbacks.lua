--! keys: 1
--! argc: 1+
-- Claimed deliveries handed back unsent, due again after delay ms (0: at once), on Redis' clock like
-- every score of the set. XX: one settled meanwhile (no longer in the set) stays settled.
-- KEYS: keys.CALLBACKS_DUE; ARGV: delay ms, webhook ids...
local clock = redis.call('TIME')
local at = clock[1] * 1000 + math.floor(clock[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', at, ARGV[i])
end
return 1
