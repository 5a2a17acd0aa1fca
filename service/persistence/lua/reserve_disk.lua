--! keys: 2
--! argc: 8
-- Reserve disk space for a download in the ledger of its videos directory (diskspace.py), on Redis'
-- clock. Entries are leases: a process that died stops renewing its own, and they lapse here. Each
-- names its owner (the worker's consumer name), so a worker that lost a job to another cannot renew
-- or give back the entry the other has made since; the task's place in line stays with the task.
-- A download is granted its bytes when they fit in the room left: free space (measured by the caller
-- just before) less the floor, less what other reservations have still to write, less what every
-- download waiting longer needs (the oldest waiting one comes first; a need that could never fit the
-- disk keeps no one else waiting). One that already holds at least as much keeps it. A refused
-- download drops any reservation it held and waits in line, keeping its place (its first wait).
-- Held entries read "<bytes still to write>:<expiry ms>:<owner>", waiting ones
-- "<bytes needed>:<waiting since ms>:<expiry ms>:<owner>".
-- KEYS: held, waiting; ARGV: task id, need, free, capacity, floor, lease ms, waiting since ms (0: now), owner
-- Returns {granted (0/1), room left before waiters, reserved by others, needed by those ahead, since ms}.
local held_key, waiting_key = KEYS[1], KEYS[2]
local id, need, free, capacity, floor = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local lease, since, owner = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local others, mine = 0, nil
local held = redis.call('HGETALL', held_key)
for i = 1, #held, 2 do
  local remaining, expires = string.match(held[i + 1], '^(%d+):(%d+):')
  if not expires or tonumber(expires) <= now then
    redis.call('HDEL', held_key, held[i])
  elseif held[i] == id then
    mine = tonumber(remaining)
  else
    others = others + tonumber(remaining)
  end
end
local waiters = {}
local waiting = redis.call('HGETALL', waiting_key)
for i = 1, #waiting, 2 do
  local wanted, first, expires = string.match(waiting[i + 1], '^(%d+):(%d+):(%d+):')
  if not expires or tonumber(expires) <= now then
    redis.call('HDEL', waiting_key, waiting[i])
  elseif waiting[i] == id then
    if since == 0 or tonumber(first) < since then since = tonumber(first) end
  else
    waiters[#waiters + 1] = {waiting[i], tonumber(wanted), tonumber(first)}
  end
end
if since == 0 then since = now end
local ahead = 0
for _, waiter in ipairs(waiters) do
  local other, wanted, first = waiter[1], waiter[2], waiter[3]
  if (first < since or (first == since and other < id)) and wanted <= capacity - floor then
    ahead = ahead + wanted
  end
end
local room = free - others - floor
if (mine and need <= mine) or room - ahead >= need then
  redis.call('HSET', held_key, id, string.format('%d:%d:%s', need, now + lease, owner))
  redis.call('HDEL', waiting_key, id)
  return {1, room, others, ahead, since}
end
redis.call('HDEL', held_key, id)
redis.call('HSET', waiting_key, id, string.format('%d:%d:%d:%s', need, since, now + lease, owner))
return {0, room, others, ahead, since}
