--! keys: 2
--! argc: 2
-- Give back a download's entries in the disk ledger (held and waiting), those of its owner only.
-- KEYS: held, waiting; ARGV: task id, owner
local released = 0
for _, key in ipairs(KEYS) do
  local entry = redis.call('HGET', key, ARGV[1])
  if entry and string.match(entry, ':([^:]*)$') == ARGV[2] then
    redis.call('HDEL', key, ARGV[1])
    released = released + 1
  end
end
return released
