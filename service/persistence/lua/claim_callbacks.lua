--! keys: 1
--! argc: 2
-- Callback deliveries that are due, each leased to this sender for a while (a sender that dies gives
-- them back when the lease ends). KEYS: keys.CALLBACKS_DUE; ARGV: how many, lease ms.
-- Returns {webhook ids..., ms until the next one is due (-1: none)}.
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local due_key = KEYS[1]
local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, webhook_id in ipairs(due) do
  redis.call('ZADD', due_key, now + tonumber(ARGV[2]), webhook_id)
end
local next_one = redis.call('ZRANGE', due_key, 0, 0, 'WITHSCORES')
local wait = -1
if #next_one > 0 then wait = math.max(1, tonumber(next_one[2]) - now) end
due[#due + 1] = wait
return due
