--! derives: a task's model, owner and deliveries, read from its hash
-- Shared by every script that changes a task.
local RANK = {queued = 0, submitted = 1, downloading = 2, ready = 3, failed = 3, canceled = 3, expired = 3}

-- A submitter's own indexes, as keys.owner_tasks names them: all its tasks, or those of a status.
local function owner_index(owner, status)
  local key = OWNER .. owner .. TASKS_INDEX
  if status then key = key .. ':' .. status end
  return key
end

-- The queue of a submitter's tasks of one model (keys.QUEUE).
local function queue_of(model, owner)
  return QUEUE .. model .. ':' .. owner
end

local function wake()
  redis.call('RPUSH', WAKE, '1')
  redis.call('LTRIM', WAKE, -16, -1)
end

-- A queued task waits in its submitter's queue of its model; submitters take turns (round robin).
local function enqueue(id, model, owner, at_head)
  local queue = queue_of(model, owner)
  local rotation = ROTATION .. model
  if at_head then redis.call('LPUSH', queue, id) else redis.call('RPUSH', queue, id) end
  if not redis.call('LPOS', rotation, owner) then
    if at_head then redis.call('LPUSH', rotation, owner) else redis.call('RPUSH', rotation, owner) end
  end
end

local function dequeue(id, model, owner)
  local queue = queue_of(model, owner)
  redis.call('LREM', queue, 0, id)
  if redis.call('LLEN', queue) == 0 then redis.call('LREM', ROTATION .. model, 0, owner) end
end

-- The outbox: a callback the submitter asked for is recorded in the same step as the state change,
-- so a crash between the two cannot lose it. Its webhook id is stable across retries.
local function outbox(id, to, now)
  local callback = redis.call('HGET', TASK .. id, 'callback')
  if not callback then return end
  local event = 'task.' .. to
  for _, wanted in ipairs(cjson.decode(callback).events or {}) do
    if wanted == event then
      local webhook_id = 'msg_' .. id .. '_' .. to
      redis.call('HSET', DELIVERIES .. id, webhook_id,
        cjson.encode({event = event, status = 'pending', attempts = 0, created_at = now}))
      redis.call('ZADD', CALLBACKS_DUE, 0, webhook_id)
      redis.call('RPUSH', CALLBACKS_WAKE, '1')
      redis.call('LTRIM', CALLBACKS_WAKE, -16, -1)
    end
  end
end

-- DashScope no longer runs the task: its slot goes back (the next task may go), and so does the
-- sweeper's watch.
local function release_slot(id, model)
  if redis.call('ZREM', SLOTS .. model, id) == 1 then wake() end
  redis.call('ZREM', SWEEP, id)
end

-- Redis gives a stream's newest node room for stream-node-max-bytes (4 KiB by default) as soon as the
-- node is made, so a task's change stream of a few entries costs some 4.7 KB, several times the task.
-- Written back from its serialized form (DUMP, RESTORE: same entries, ids and TTL) the stream takes
-- what its entries need, about 0.7 KB; later entries grow the node as they come. Followers blocked on
-- the stream stay blocked until an entry newer than theirs arrives, as before. Where DUMP or RESTORE
-- is not allowed (an ACL without @dangerous, a managed Redis that renamed them) the stream is left as
-- it is: RESTORE either replaces the key whole or changes nothing.
local function compact_stream(key)
  local dumped = redis.pcall('DUMP', key)
  if type(dumped) ~= 'string' then return end
  redis.pcall('RESTORE', key, math.max(redis.call('PTTL', key), 0), dumped, 'REPLACE')
end

local function transition(id, to, now, fields)
  local key = TASK .. id
  local current = redis.call('HGET', key, 'status')
  if not current then return 'missing' end
  if RANK[to] <= RANK[current] then return 'stale' end
  local created, model, owner = unpack(redis.call('HMGET', key, 'created_ms', 'model', 'owner'))
  local member = created .. ':' .. id
  if current == 'queued' or current == 'submitted' then
    -- Leaving the queue, or DashScope: give back the place, the slot (the next task may go) and the
    -- sweeper's watch.
    if current == 'queued' then dequeue(id, model, owner or '') end
    release_slot(id, model)
  end
  redis.call('ZREM', TASKS_BY_STATUS .. current, member)
  redis.call('ZADD', TASKS_BY_STATUS .. to, 0, member)
  redis.call('ZREM', owner_index(owner or '', current), member)
  redis.call('ZADD', owner_index(owner or '', to), 0, member)
  -- A task stored before the submitters' indexes existed enters them at its next change, whatever the
  -- one-time indexing at start-up has reached (adding a member twice changes nothing).
  redis.call('ZADD', owner_index(owner or ''), 0, member)
  redis.call('HSET', key, 'status', to, 'updated_at', now, unpack(fields))
  local changes = TASK_CHANGES .. id
  redis.call('XADD', changes, 'MAXLEN', '~', TASK_CHANGES_MAXLEN, '*', 'status', to, 'at', now)
  if RANK[to] == 3 then
    -- Ended: what only the way here needed goes, and the change stream (compacted: see compact_stream)
    -- stays only as long as a follower may still resume it.
    redis.call('HDEL', key, 'video_url', 'dl_etag', 'dl_total', 'dl_bytes', 'submit_attempt_at', 'awaiting_reason',
      'reason_reads', 'job_missing_ms', 'job_requeues')
    -- Rewritten whole: a hash that once held a long value (DashScope's signed video URL, hundreds of
    -- bytes) stays a hashtable after the value goes, some 1.2 KB more than the listpack Redis makes of
    -- a hash whose values are all short (task.py keeps the stored video's fields short for this).
    local kept = redis.call('HGETALL', key)
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(kept))
    compact_stream(changes)
    local ttl = tonumber(redis.call('HGET', SETTINGS, 'changes_ttl_ms') or '')
    redis.call('PEXPIRE', changes, ttl or TASK_CHANGES_TTL_MS)
    -- Retention reads the oldest ended tasks first, from two time-ordered indexes that each hold a task
    -- once: those with a stored video, and the others (keys.py).
    local clock = redis.call('TIME')
    local ended_ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
    if to == 'ready' then
      redis.call('ZADD', VIDEOS_KEPT, ended_ms, id)
    else
      redis.call('ZADD', TASKS_ENDED, ended_ms, id)
    end
  end
  outbox(id, to, now)
  return 'ok'
end

local function error_json(code, message)
  return cjson.encode({code = code, message = message})
end

-- A FAILED event without DashScope's reason (the documented event carries none): the task stays
-- submitted, marked ds_status FAILED, while one read of the DashScope task fetches its code and message
-- (failures.py). It gives back its slot and the sweeper's watch now, since DashScope no longer runs it;
-- it turns failed, and its callback is written, only once the reason is known, so that every follower
-- sees DashScope's own code. Marked once (awaiting_reason): a second FAILED event queues no second read.
local function await_reason(id, now)
  local key = TASK .. id
  local current, awaiting, model = unpack(redis.call('HMGET', key, 'status', 'awaiting_reason', 'model'))
  if not current then return 'missing' end
  if current ~= 'submitted' or awaiting then return 'stale' end
  release_slot(id, model)
  redis.call('HSET', key, 'ds_status', 'FAILED', 'awaiting_reason', now, 'updated_at', now)
  redis.call('XADD', FAILURE_JOBS, '*', 'task', id)
  return 'ok'
end

-- What a completion event means for a known task.
local function apply(id, status, now, video_url, code, message)
  if status ~= 'FAILED' and redis.call('HEXISTS', TASK .. id, 'awaiting_reason') == 1 then
    -- DashScope's last word on the task was FAILED (its reason is being read); nothing says otherwise after.
    return 'stale'
  end
  if status == 'SUCCEEDED' then
    local fields = {'ds_status', status}
    if video_url ~= '' then
      fields[3] = 'video_url'
      fields[4] = video_url
    end
    local result = transition(id, 'downloading', now, fields)
    if result == 'ok' then
      redis.call('XADD', DOWNLOAD_JOBS, '*', 'task', id)
    end
    return result
  elseif status == 'FAILED' then
    -- An event (or the sweeper's read) that carries DashScope's reason needs no read for it.
    if code == '' then return await_reason(id, now) end
    if message == '' then message = 'DashScope reported the task FAILED' end
    return transition(id, 'failed', now, {'ds_status', status, 'error', error_json(code, message)})
  elseif status == 'CANCELED' then
    return transition(id, 'canceled', now, {'ds_status', status})
  elseif status == 'UNKNOWN' then
    return transition(id, 'expired', now, {'ds_status', status, 'error', error_json('TaskExpired',
      'DashScope no longer knows the task (UNKNOWN): it expired before the video was stored')})
  end
  return 'stale'
end
