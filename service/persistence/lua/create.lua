--! include: common
--! argc: 8+
--! derives: the task an Idempotency-Key names, read from that key
-- A new queued task, unless the Idempotency-Key names an earlier one or the submitter's queues are full:
-- both are decided here, in the same step as the write, so parallel creates cannot slip past either.
-- ARGV: id, idempotency key ('' for none), idempotency ttl, created_ms, now, request digest ('' for
--       none), most queued tasks per submitter (-1: no limit), number of models n, model 1 .. model n,
--       field, value, ...
-- Returns {'created', id}, {'existing', id} (the key's task, created by the same request), {'reused', id}
-- (the key's task was created by another request) or {'full', tasks already queued}. With an empty id it
-- writes nothing and answers {'admissible', ''} where it would have created.
local id, idem_key, idem_ttl, created_ms, now, digest = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local max_queued, models = tonumber(ARGV[7]), tonumber(ARGV[8])
-- Reads before writes: nothing is written unless the task is created.
if idem_key ~= '' then
  local existing = redis.call('GET', IDEMPOTENCY .. idem_key)
  -- The key's task was deleted since: the key names nothing any more, and this request creates anew.
  if existing and redis.call('EXISTS', TASK .. existing) == 0 then existing = nil end
  if existing then
    local first = redis.call('HGET', TASK .. existing, 'request_digest')
    -- A key kept from before digests were stored says nothing about its body: its task, as then.
    if first and first ~= digest then return {'reused', existing} end
    return {'existing', existing}
  end
end
local fields = {}
local owner = ''
for i = 9 + models, #ARGV, 2 do
  if ARGV[i] == 'owner' then owner = ARGV[i + 1] end
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
if max_queued >= 0 then
  -- What waits in the submitter's queues, all models together (an admitted task has left its queue).
  local queued = 0
  for i = 9, 8 + models do
    queued = queued + redis.call('LLEN', queue_of(ARGV[i], owner))
  end
  if queued >= max_queued then return {'full', queued} end
end
-- No id: only asked whether the create would go through (before work it would waste, an image's upload).
if id == '' then return {'admissible', ''} end
if idem_key ~= '' then
  redis.call('SET', IDEMPOTENCY .. idem_key, id, 'EX', idem_ttl)
  fields[#fields + 1] = 'request_digest'
  fields[#fields + 1] = digest
end
local member = created_ms .. ':' .. id
-- created_at is not stored: it is created_ms written out (task.py reads it so).
redis.call('HSET', TASK .. id, 'id', id, 'status', 'queued', 'created_ms', created_ms, 'updated_at', now,
  unpack(fields))
redis.call('ZADD', TASKS_ALL, 0, member)
redis.call('ZADD', TASKS_BY_STATUS .. 'queued', 0, member)
redis.call('ZADD', owner_index(owner), 0, member)
redis.call('ZADD', owner_index(owner, 'queued'), 0, member)
redis.call('XADD', TASK_CHANGES .. id, 'MAXLEN', '~', TASK_CHANGES_MAXLEN, '*', 'status', 'queued', 'at', now)
-- A queued task may wait for hours: its stream holds one entry, not a node's worth of room.
compact_stream(TASK_CHANGES .. id)
local model = redis.call('HGET', TASK .. id, 'model')
enqueue(id, model, owner, false)
outbox(id, 'queued', now)
wake()
redis.call('HINCRBY', COUNTERS, 'tasks_created', 1)
return {'created', id}
