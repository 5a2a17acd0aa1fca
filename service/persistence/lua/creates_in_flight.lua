--! derives: the slots of a task's model, read from its hash by the script that includes it
-- Creates in flight (keys.INFLIGHT), for the admission scripts: a task whose create may still answer
-- is never handed out again; it keeps a slot until that create can no longer answer (DashScope may run
-- what it lands), and only then goes back to its queue, to be looked up at DashScope before it is sent.
local function clock_ms()
  local clock = redis.call('TIME')
  return clock[1] * 1000 + math.floor(clock[2] / 1000)
end

-- ms until no create of the task can answer any more; 0 when none is in flight.
local function inflight_ms(id)
  local marker = INFLIGHT .. id
  local ttl = redis.call('PTTL', marker)
  if ttl == -1 then
    -- Always written with a TTL; one without could never end, so it is not trusted.
    redis.call('DEL', marker)
    return 0
  end
  return math.max(ttl, 0)
end

-- The task's slot lasts at least ms from now.
local function hold_slot(id, model, now, ms)
  local slots = SLOTS .. model
  local until_ms = now + ms
  if tonumber(redis.call('ZSCORE', slots, id) or '0') < until_ms then redis.call('ZADD', slots, until_ms, id) end
end

-- Whether a create of the task may still answer; if so its slot is kept until then.
local function park(id, model, now)
  local ms = inflight_ms(id)
  if ms == 0 then return false end
  hold_slot(id, model, now, ms)
  return true
end
