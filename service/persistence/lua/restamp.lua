--! keys: 1
--! argc: 2
-- A request has been answered: it counts in its window from now on. DashScope counted it when it
-- arrived, somewhere between the send and the answer; counting from the answer keeps the next one a
-- whole window after it, however long the request travelled. Added again if the window dropped it.
-- KEYS: the window's key; ARGV: member, window ms.
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[1], clock[1] * 1000 + math.floor(clock[2] / 1000), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
