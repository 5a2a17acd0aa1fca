--! keys: 1
--! argc: 2
-- DashScope's account-wide query limit (reads, lists and cancels), shared by every process.
-- KEYS: the window's key; ARGV: limit per window, window ms.
-- Returns {0, member} (go: the member stands for the request in the window) or {ms to wait, ''}.
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {math.max(1, tonumber(oldest[2]) + window - now), ''}
end
local member = clock[1] .. clock[2] .. math.random()
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], window * 2)
return {0, member}
