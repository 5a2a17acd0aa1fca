--! include: common
--! keys: 2
--! argc: 4
--! derives: the task the dead letter names, read from the letter
-- A dead letter of a job queued again (POST /v1/dead-letters/{id}/replay). Its task, if this dead letter
-- ended it (failed, its error naming the letter), is opened again into the state the job works on, the
-- one way back a state ever takes, and only on an operator's word: a late retry cannot, since nothing
-- but this script writes a state backwards, and only for the letter's own error. A task that ended
-- otherwise, or is gone, is not replayed: the letter stays for the operator to see.
-- KEYS: job stream, dead-letter stream (scripts.job_streams_keys)
-- ARGV: entry id, kind, the status the job works on, now
-- Returns {'ok', new job id}, {'missing'} (no such letter), {'gone'} (the task is deleted) or
-- {'ended', status} (the task has ended otherwise).
local stream, dead = KEYS[1], KEYS[2]
local letter, kind, works_on, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local entries = redis.call('XRANGE', dead, letter, letter)
if #entries == 0 then return {'missing'} end
local fields = {}
local raw = entries[1][2]
for i = 1, #raw, 2 do fields[raw[i]] = raw[i + 1] end
local id = fields.task or ''
local key = TASK .. id
local status, err, created, owner = unpack(redis.call('HMGET', key, 'status', 'error', 'created_ms', 'owner'))
if not status then return {'gone'} end
if status ~= works_on then
  local ok, decoded = pcall(cjson.decode, err or '')
  if status ~= 'failed' or not ok or type(decoded) ~= 'table' or decoded.dead_letter ~= kind .. ':' .. letter then
    return {'ended', status}
  end
  -- Opened again: out of the ended indexes, into those of the state it works on.
  local member = created .. ':' .. id
  redis.call('ZREM', TASKS_BY_STATUS .. status, member)
  redis.call('ZADD', TASKS_BY_STATUS .. works_on, 0, member)
  redis.call('ZREM', owner_index(owner or '', status), member)
  redis.call('ZADD', owner_index(owner or '', works_on), 0, member)
  redis.call('ZREM', TASKS_ENDED, id)
  redis.call('HDEL', key, 'error')
  redis.call('HSET', key, 'status', works_on, 'updated_at', now, 'replayed_at', now)
  if works_on == 'submitted' then redis.call('HSET', key, 'awaiting_reason', now) end
  redis.call('PERSIST', TASK_CHANGES .. id)
  redis.call('XADD', TASK_CHANGES .. id, 'MAXLEN', '~', TASK_CHANGES_MAXLEN, '*', 'status', works_on, 'at', now)
end
local job = redis.call('XADD', stream, '*', 'task', id)
redis.call('XDEL', dead, letter)
redis.call('HINCRBY', COUNTERS, 'jobs_replayed|kind=' .. kind, 1)
return {'ok', job}
