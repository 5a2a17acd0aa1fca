--! keys: 2
--! argc: 4
-- Renew a download's lease in the disk ledger, held or waiting, if the entry is still its owner's; a
-- held one also records the bytes it has still to write (ARGV[2], -1: unchanged). Returns 1 if it
-- held a reservation, 2 if it was waiting, 0 if the ledger has no entry of this owner's for the task.
-- KEYS: held, waiting; ARGV: task id, remaining, lease ms, owner
local held_key, waiting_key, id, owner = KEYS[1], KEYS[2], ARGV[1], ARGV[4]
local remaining, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local entry = redis.call('HGET', held_key, id)
if entry then
  local kept, _, holder = string.match(entry, '^(%d+):(%d+):(.*)$')
  if holder ~= owner then return 0 end
  if remaining < 0 then remaining = tonumber(kept) end
  redis.call('HSET', held_key, id, string.format('%d:%d:%s', remaining, now + lease, owner))
  return 1
end
entry = redis.call('HGET', waiting_key, id)
if entry then
  local wanted, first, _, holder = string.match(entry, '^(%d+):(%d+):(%d+):(.*)$')
  if holder ~= owner then return 0 end
  redis.call('HSET', waiting_key, id, string.format('%d:%d:%d:%s', tonumber(wanted), tonumber(first),
    now + lease, owner))
  return 2
end
return 0
