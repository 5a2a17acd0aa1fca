"""The Lua scripts behind every state change: each runs atomically inside Redis.

A state only moves forward (queued < submitted < downloading < terminal); whatever order or number
of times events arrive, a script either applies a change whole, with its side effects (index,
change stream, next job), or leaves everything as it was.
"""

import re

from . import keys
from .keys import EARLY_EVENT_ID_MAX, EVENT_LOG_FIELD_MAX, EVENT_LOG_PREFIX, TASK_CHANGES_MAXLEN, TASK_CHANGES_TTL_MS


def _lua_string(text: str) -> str:
    # Key names are plain ASCII; anything that would need escaping in Lua is refused, not escaped.
    if not re.fullmatch(r"[A-Za-z0-9{}:_.-]*", text):
        raise ValueError(f"not a plain key name: {text!r}")
    return "'" + text + "'"


# Every key name of keys.py, as a Lua local of the same name (TASK, OWNER, COUNTERS, ...), put at the
# head of each script that names keys itself: the scripts spell no key name of their own, so keys.py is
# the one place a name is written. They are injected rather than passed as KEYS because most keys a
# script touches are known only inside it (the task an event names, its model's slots, its owner's
# indexes). That stays cluster-safe: every name carries the {wanhook} hash tag, so all of them live in
# the slot of the one key each script declares (keys.ROUTE), which sends the script to that slot's node.
KEY_NAMES = "".join(
    f"local {name} = {_lua_string(value)}\n"
    for name, value in vars(keys).items()
    if name.isupper() and isinstance(value, str)
)

# Shared by every script that changes a task.
COMMON = (
    KEY_NAMES
    + """
local CHANGES_TTL_MS = """
    + str(TASK_CHANGES_TTL_MS)
    + """
local CHANGES_MAXLEN = """
    + str(TASK_CHANGES_MAXLEN)
    + """
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
  redis.call('XADD', changes, 'MAXLEN', '~', CHANGES_MAXLEN, '*', 'status', to, 'at', now)
  if RANK[to] == 3 then
    -- Ended: what only the way here needed goes, and the change stream (compacted: see compact_stream)
    -- stays only as long as a follower may still resume it.
    redis.call('HDEL', key, 'video_url', 'dl_etag', 'dl_total', 'dl_bytes', 'submit_attempt_at', 'awaiting_reason',
      'reason_reads')
    -- Rewritten whole: a hash that once held a long value (DashScope's signed video URL, hundreds of
    -- bytes) stays a hashtable after the value goes, some 1.2 KB more than the listpack Redis makes of
    -- a hash whose values are all short (task.py keeps the stored video's fields short for this).
    local kept = redis.call('HGETALL', key)
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(kept))
    compact_stream(changes)
    local ttl = tonumber(redis.call('HGET', SETTINGS, 'changes_ttl_ms') or '')
    redis.call('PEXPIRE', changes, ttl or CHANGES_TTL_MS)
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
"""
)

# A new queued task, unless the Idempotency-Key names an earlier one or the submitter's queues are full:
# both are decided here, in the same step as the write, so parallel creates cannot slip past either.
# ARGV: id, idempotency key ('' for none), idempotency ttl, created_ms, now, request digest ('' for
#       none), most queued tasks per submitter (-1: no limit), number of models n, model 1 .. model n,
#       field, value, ...
# Returns {'created', id}, {'existing', id} (the key's task, created by the same request), {'reused', id}
# (the key's task was created by another request) or {'full', tasks already queued}.
CREATE = (
    COMMON
    + """
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
redis.call('XADD', TASK_CHANGES .. id, 'MAXLEN', '~', CHANGES_MAXLEN, '*', 'status', 'queued', 'at', now)
-- A queued task may wait for hours: its stream holds one entry, not a node's worth of room.
compact_stream(TASK_CHANGES .. id)
local model = redis.call('HGET', TASK .. id, 'model')
enqueue(id, model, owner, false)
outbox(id, 'queued', now)
wake()
redis.call('HINCRBY', COUNTERS, 'tasks_created', 1)
return {'created', id}
"""
)

# Tasks stored before the submitters' indexes existed, added to them: one batch of the index of all
# tasks, after the member ``after`` ('' from the start). Each task goes to the index of the status it
# has as the batch runs, so a change made meanwhile by ``transition`` is never undone.
# ARGV: after, batch size. Returns {the batch's last member ('' once the index is done), tasks read}.
INDEX_OWNERS = (
    COMMON
    + """
local after, count = ARGV[1], tonumber(ARGV[2])
local start = '-'
if after ~= '' then start = '(' .. after end
local members = redis.call('ZRANGEBYLEX', TASKS_ALL, start, '+', 'LIMIT', 0, count)
for _, member in ipairs(members) do
  local id = string.sub(member, string.find(member, ':', 1, true) + 1)
  local task = redis.call('HMGET', TASK .. id, 'status', 'owner')
  if task[1] then
    redis.call('ZADD', owner_index(task[2] or ''), 0, member)
    redis.call('ZADD', owner_index(task[2] or '', task[1]), 0, member)
  end
end
local last = ''
if #members == count then last = members[#members] end
return {last, #members}
"""
)

# Tasks that ended before the retention indexes existed, added to them: one batch of the index of all
# tasks, after the member ``after`` ('' from the start), each at the time it was created (when it ended
# is not kept; a task ends within a day of its creation, its video URL's lifetime). NX: a task the
# scripts indexed meanwhile keeps its own time.
# ARGV: after, batch size. Returns {the batch's last member ('' once the index is done), tasks read}.
INDEX_ENDED = (
    COMMON
    + """
local after, count = ARGV[1], tonumber(ARGV[2])
local start = '-'
if after ~= '' then start = '(' .. after end
local members = redis.call('ZRANGEBYLEX', TASKS_ALL, start, '+', 'LIMIT', 0, count)
for _, member in ipairs(members) do
  local separator = string.find(member, ':', 1, true)
  local created, id = string.sub(member, 1, separator - 1), string.sub(member, separator + 1)
  local status, video, video_sha = unpack(redis.call('HMGET', TASK .. id, 'status', 'video', 'video_sha256'))
  if status and RANK[status] == 3 then
    if status == 'ready' and (video or video_sha) then
      redis.call('ZADD', VIDEOS_KEPT, 'NX', tonumber(created), id)
    elseif not redis.call('ZSCORE', VIDEOS_KEPT, id) then
      redis.call('ZADD', TASKS_ENDED, 'NX', tonumber(created), id)
    end
  end
end
local last = ''
if #members == count then last = members[#members] end
return {last, #members}
"""
)

# ARGV: id, to, now, field, value, ...
TRANSITION = (
    COMMON
    + """
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local result = transition(ARGV[1], ARGV[2], ARGV[3], fields)
if result == 'ok' then redis.call('HINCRBY', COUNTERS, 'transitions_' .. ARGV[2], 1) end
return result
"""
)

# DashScope accepted the task: it holds a slot of its model until its completion event, and the
# sweeper watches it from its deadline on. An event that raced ahead of this answer is applied now.
# The answer may come late, for a task that has moved on meanwhile: adopted while the task still waits
# (queued again, not yet recorded), the same DashScope task found by listing meanwhile, a task its user
# canceled (the caller cancels at DashScope: the user asked), or else an orphan: left running, recorded,
# counted. wanhook cancels nothing its user did not ask to cancel.
# ARGV: id, DashScope task id, DashScope status, request id, now, slot lease ms, sweep after ms,
#       adopt (1: the task was found by listing, and must not be another wanhook task's),
#       attempt (the submission attempt whose create this answers; its in-flight marker ends here)
# Returns 'ok', 'same', 'canceled', 'orphan', 'missing', or with adopt 'taken' (another task's) or 'moved'
# (the task no longer waits: nothing to adopt for).
MARK_SUBMITTED = (
    COMMON
    + """
local id, ds_id, now, adopt, attempt = ARGV[1], ARGV[2], ARGV[5], ARGV[8] == '1', ARGV[9] or ''
local key = TASK .. id
local ds_key = DASHSCOPE_TASK .. ds_id
local status, current = unpack(redis.call('HMGET', key, 'status', 'ds_task_id'))
if not status then
  if redis.call('EXISTS', DELETED .. id) == 1 then
    -- Its user deleted it while the create was in flight: as for a canceled task, the caller cancels
    -- it at DashScope; its late events find a task that is gone (stale), and no early record is kept.
    redis.call('SET', ds_key, id, 'EX', math.max(redis.call('TTL', DELETED .. id), 1))
    redis.call('DEL', EARLY_EVENT .. ds_id)
    return 'canceled'
  end
  return 'missing'
end
if adopt then
  if status ~= 'queued' then return 'moved' end
  if redis.call('EXISTS', ds_key) == 1 or redis.call('HEXISTS', ORPHANS, ds_id) == 1 then
    return 'taken'
  end
end
-- The attempt's create has answered (or its task was found): nothing of it is in flight any more.
local marker_key = INFLIGHT .. id
if attempt ~= '' and redis.call('GET', marker_key) == attempt then redis.call('DEL', marker_key) end
if status ~= 'queued' then
  if current == ds_id then return 'same' end
  if status == 'canceled' then
    -- Mapped when the task has no DashScope task of its own, so that the late events are stale, not unknown.
    if not current then redis.call('SET', ds_key, id) end
    return 'canceled'
  end
  redis.call('HSET', ORPHANS, ds_id, cjson.encode({task = id, status = status, at = now}))
  redis.call('HINCRBY', COUNTERS, 'submissions_orphaned', 1)
  return 'orphan'
end
local result = transition(id, 'submitted', now, {'ds_task_id', ds_id, 'ds_status', ARGV[3], 'ds_request_id', ARGV[4]})
if result ~= 'ok' then return result end
redis.call('SET', ds_key, id)
local clock = redis.call('TIME')
local ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
local model = redis.call('HGET', key, 'model')
redis.call('ZADD', SLOTS .. model, ms + tonumber(ARGV[6]), id)
redis.call('ZADD', SWEEP, ms + tonumber(ARGV[7]), id)
redis.call('HINCRBY', COUNTERS, 'transitions_submitted', 1)
local early_key = EARLY_EVENT .. ds_id
local early = redis.call('GET', early_key)
if early then
  local event = cjson.decode(early)
  apply(id, event.status, now, event.video_url, event.code, event.message)
  redis.call('DEL', early_key)
  redis.call('HINCRBY', COUNTERS, 'events_early_applied', 1)
end
return result
"""
)

# One completion event, recorded and applied in one step: dedupe, audit log, transition, next job.
# Everything a stranger's event can leave behind is bounded (see keys.py): the audit entry, the
# early record and the deduplication key.
# ARGV: source, event id, DashScope task id, status, now, video url, code, message, foreign (0/1),
#       seen ttl, early ttl, log maxlen, the body as audit.py encodes it ('' when over EVENT_LOG_BODY_MAX),
#       the body's first bytes, its sha256 (hex), its size, the field the encoded body goes under (audit.py)
INGEST = (
    COMMON
    + """
local FIELD_MAX, EARLY_ID_MAX, PREFIX_MAX = """
    + str(EVENT_LOG_FIELD_MAX)
    + ", "
    + str(EARLY_EVENT_ID_MAX)
    + ", "
    + str(EVENT_LOG_PREFIX)
    + """
local source, event_id, ds_id, status, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local video_url, code, message, foreign = ARGV[6], ARGV[7], ARGV[8], ARGV[9]

-- At most n bytes of s, never ending inside a UTF-8 character (the stream's readers decode it).
local function clip(s, n)
  if #s <= n then return s end
  local cut = n
  while cut > 0 and s:byte(cut + 1) >= 128 and s:byte(cut + 1) < 192 do cut = cut - 1 end
  return s:sub(1, cut)
end

-- Reads before writes: a script that fails half-way keeps what it already wrote, so nothing is
-- written until every read has succeeded.
-- The source's length first: source 'a:b' with id 'c' and source 'a' with id 'b:c' stay apart. Real
-- identifiers are short; long ones are keyed by their digest, so a key stays small whatever is sent.
local seen_id = #source .. ':' .. source .. ':' .. event_id
if #seen_id > 2 * FIELD_MAX then seen_id = 'sha1:' .. redis.sha1hex(seen_id) end
local seen_key = EVENT_SEEN .. seen_id
local outcome
local task_id = ''
if redis.call('EXISTS', seen_key) == 1 then
  outcome = 'duplicate'
elseif foreign == '1' then
  outcome = 'ignored'
else
  task_id = redis.call('GET', DASHSCOPE_TASK .. ds_id) or ''
  if task_id == '' then
    -- Either the create call has not returned yet, or the task is not wanhook's. Keep it aside (only
    -- what applying it needs, each part bounded by the caller); an id no DashScope task can have is
    -- not kept, since no create call will ever claim it.
    if #ds_id <= EARLY_ID_MAX then
      redis.call('SET', EARLY_EVENT .. ds_id, cjson.encode({status = status, video_url = video_url,
        code = code, message = message}), 'EX', ARGV[11])
    end
    outcome = 'unknown_task'
  elseif apply(task_id, status, now, video_url, code, message) == 'ok' then
    outcome = 'applied'
  else
    outcome = 'stale'
  end
end
if outcome ~= 'duplicate' then redis.call('SET', seen_key, '1', 'EX', ARGV[10]) end
local entry
if ARGV[13] ~= '' and (outcome == 'applied' or outcome == 'stale' or #ARGV[13] <= PREFIX_MAX) then
  -- An event of a task wanhook knows keeps its body whole, for audit and replay (deflated: audit.py);
  -- so does any other whose encoded body takes no more room than the prefix it would keep (one that
  -- raced ahead of its create call's answer, a duplicate of DashScope's). Its source, id, DashScope
  -- task id, status and size are the body's own: audit.read_entry gives them back from it.
  entry = {'task', task_id, 'outcome', outcome, 'body_sha256', ARGV[15], ARGV[17], ARGV[13]}
else
  entry = {'source', clip(source, FIELD_MAX), 'id', clip(event_id, FIELD_MAX), 'ds_task_id', clip(ds_id, FIELD_MAX),
    'status', clip(status, 32), 'task', task_id, 'outcome', outcome, 'body_sha256', ARGV[15], 'body_bytes', ARGV[16],
    'body_prefix', ARGV[14]}
end
redis.call('XADD', EVENT_LOG, 'MAXLEN', '~', ARGV[12], '*', unpack(entry))
redis.call('HINCRBY', COUNTERS, 'events_' .. outcome, 1)
return {outcome, task_id}
"""
)
# How many arguments INGEST reads: counted from the script itself, so the batch form cannot fall behind it.
INGEST_ARGC = max(int(n) for n in re.findall(r"ARGV\[(\d+)\]", INGEST))

# Several events, each exactly as INGEST records it, in one call (group_commit.py): ARGV holds each
# event's INGEST_ARGC arguments one after another. Each event runs in its own pcall, so one that fails
# (a write refused) fails alone, with what it had written so far kept, as INGEST alone would; the
# others still run. Returns, per event in order, INGEST's reply or the event's own error.
INGEST_BATCH = (
    COMMON
    + "local function ingest(ARGV)\n"
    + INGEST.removeprefix(COMMON)
    + """end

local replies = {}
for first = 0, #ARGV - 1, """
    + str(INGEST_ARGC)
    + """ do
  local argv = {}
  for n = 1, """
    + str(INGEST_ARGC)
    + """ do argv[n] = ARGV[first + n] end
  local ok, reply = pcall(ingest, argv)
  if not ok and not (type(reply) == 'table' and reply.err) then reply = {err = tostring(reply)} end
  replies[#replies + 1] = reply
end
return replies
"""
)

# An ended task and everything kept for it, removed in one step (DELETE /v1/tasks/{id}, retention): its
# hash, its indexes (all, by status, its owner's, retention's), its change stream, its queue place, slot
# and sweeper watch, its callback deliveries (their due times and frozen bodies). Its DashScope task's
# mapping is kept for tombstone ttl seconds (removed when 0), so that a late completion event finds the
# task gone (stale) instead of being kept as an early event; so is a tombstone naming its owner. The
# video file is the caller's to remove: the script answers where it was.
# A task that has not ended is left alone: the caller cancels it first.
# ARGV: id, tombstone ttl seconds (0: none), '1' when the video is in an object store: the removal of the
#   object is then recorded as owed (keys.OBJECTS_TO_REMOVE) in the same step, settled by the caller
# Returns {'deleted', '1' if it had a video ('' if not), deliveries removed, change stream removed (0/1),
#   index entries removed}, {'active', status}, {'gone', owner} (deleted before: its tombstone) or
#   {'missing', ''}.
DELETE = (
    COMMON
    + """
local id, tombstone_ttl, owe_object = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local key = TASK .. id
local status, created, model, owner, ds_id, video, video_sha = unpack(redis.call('HMGET', key, 'status',
  'created_ms', 'model', 'owner', 'ds_task_id', 'video', 'video_sha256'))
if not status then
  -- Nothing to delete; what the retention indexes still hold of it goes, so that they never stall.
  redis.call('ZREM', TASKS_ENDED, id)
  redis.call('ZREM', VIDEOS_KEPT, id)
  local tombstone = redis.call('GET', DELETED .. id)
  if tombstone then return {'gone', tombstone} end
  return {'missing', ''}
end
if RANK[status] < 3 then
  redis.call('ZREM', TASKS_ENDED, id)
  return {'active', status}
end
owner = owner or ''
local member = created .. ':' .. id
local indexed = redis.call('ZREM', TASKS_ALL, member) + redis.call('ZREM', TASKS_BY_STATUS .. status, member)
  + redis.call('ZREM', owner_index(owner), member) + redis.call('ZREM', owner_index(owner, status), member)
  + redis.call('ZREM', TASKS_ENDED, id) + redis.call('ZREM', VIDEOS_KEPT, id)
if model then
  dequeue(id, model, owner)
  redis.call('ZREM', SLOTS .. model, id)
end
redis.call('ZREM', SWEEP, id)
local changes = redis.call('DEL', TASK_CHANGES .. id)
local webhook_ids = redis.call('HKEYS', DELIVERIES .. id)
for _, webhook_id in ipairs(webhook_ids) do
  redis.call('ZREM', CALLBACKS_DUE, webhook_id)
  redis.call('DEL', CALLBACK_BODY .. webhook_id)
end
redis.call('DEL', DELIVERIES .. id)
if ds_id then
  local ds_key = DASHSCOPE_TASK .. ds_id
  if redis.call('GET', ds_key) == id then
    if tombstone_ttl > 0 then redis.call('EXPIRE', ds_key, tombstone_ttl) else redis.call('DEL', ds_key) end
  end
end
redis.call('DEL', key)
if tombstone_ttl > 0 then redis.call('SET', DELETED .. id, owner, 'EX', tombstone_ttl) end
local had_video = ''
if video or video_sha then had_video = '1' end
-- In an object store: the removal of the task's object is owed until it is done (removals.py). Whether or
-- not the task names a video: an upload that failed for good may have left an object all the same.
if owe_object then redis.call('ZADD', OBJECTS_TO_REMOVE, 0, id) end
return {'deleted', had_video, #webhook_ids, changes, indexed}
"""
)

# A stored video removed by retention: the task stays, its video reads null with the reason why
# (video_removed), and it moves from the index of kept videos to that of the other ended tasks. The
# caller removes the file the answer names.
# ARGV: id, reason JSON, '1' when the video is in an object store (its removal is then owed, as in DELETE)
# Returns '1' when it had a video, '' when it has none (any more).
DROP_VIDEO = (
    KEY_NAMES
    + """
local key = TASK .. ARGV[1]
-- The task moves from the index of stored videos to that of the other ended tasks, at the same time.
local ended = redis.call('ZSCORE', VIDEOS_KEPT, ARGV[1])
redis.call('ZREM', VIDEOS_KEPT, ARGV[1])
if ended and redis.call('EXISTS', key) == 1 then redis.call('ZADD', TASKS_ENDED, 'NX', ended, ARGV[1]) end
local video, video_sha = unpack(redis.call('HMGET', key, 'video', 'video_sha256'))
if not (video or video_sha) then return '' end
-- Both of task.py's encodings of a video (one JSON value, or its parts).
redis.call('HDEL', key, 'video', 'video_dir', 'video_bytes', 'video_sha256')
redis.call('HSET', key, 'video_removed', ARGV[2])
if ARGV[3] == '1' then redis.call('ZADD', OBJECTS_TO_REMOVE, 0, ARGV[1]) end
return '1'
"""
)

# Keep holding a job only if this consumer still owns it (another may have reclaimed it).
# KEYS: stream; ARGV: group, consumer, entry id
HOLD_JOB = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""


# Creates in flight (keys.INFLIGHT), for the admission scripts: a task whose create may still answer
# is never handed out again; it keeps a slot until that create can no longer answer (DashScope may run
# what it lands), and only then goes back to its queue, to be looked up at DashScope before it is sent.
CREATES_IN_FLIGHT = """
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
"""


# Which queued task of a model may go to DashScope now, if any. Both of DashScope's per-model limits
# are kept here, for every process at once, on Redis' clock: tasks running (slots, each a lease that
# expires so a dead process cannot leak one) and submissions per second (a sliding window).
# ARGV: model, submissions per window, running, window ms, reservation lease ms
# Returns {task id, 0} or {'', ms to wait (-1: until woken)}.
ADMIT = (
    COMMON
    + CREATES_IN_FLIGHT
    + """
local model, rate, running, window, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local slots = SLOTS .. model
for _, id in ipairs(redis.call('ZRANGEBYSCORE', slots, '-inf', now)) do
  -- A lease ran out: its holder died before DashScope answered (or its events were lost for longer
  -- than the sweeper allows). A task still queued goes back to the head of its queue, once no create
  -- of it can answer any more (a holder that stopped renewing may still be waiting for one).
  local task = redis.call('HMGET', TASK .. id, 'status', 'owner')
  if not (task[1] == 'queued' and park(id, model, now)) then
    redis.call('ZREM', slots, id)
    if task[1] == 'queued' then enqueue(id, model, task[2] or '', true) end
    redis.call('HINCRBY', COUNTERS, 'slots_recovered', 1)
  end
end
local paused = redis.call('PTTL', PAUSE .. model)
if paused > 0 then return {'', paused} end
local rotation = ROTATION .. model
if redis.call('LLEN', rotation) == 0 then return {'', -1} end
if redis.call('ZCARD', slots) >= running then
  local first = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
  return {'', math.max(1, tonumber(first[2]) - now)}
end
local rate_key = SUBMIT_RATE .. model
redis.call('ZREMRANGEBYSCORE', rate_key, '-inf', now - window)
if redis.call('ZCARD', rate_key) >= rate then
  local oldest = redis.call('ZRANGE', rate_key, 0, 0, 'WITHSCORES')
  return {'', math.max(1, tonumber(oldest[2]) + window - now)}
end
while true do
  local owner = redis.call('LPOP', rotation)
  if not owner then return {'', -1} end
  local queue = queue_of(model, owner)
  local id = redis.call('LPOP', queue)
  if redis.call('LLEN', queue) > 0 then redis.call('RPUSH', rotation, owner) end
  if id and redis.call('HGET', TASK .. id, 'status') == 'queued' then
    if not park(id, model, now) then
      redis.call('ZADD', slots, now + lease, id)
      redis.call('ZADD', rate_key, now, id)
      redis.call('PEXPIRE', rate_key, window * 2)
      return {id, 0}
    end
    -- Put back while a create of it was in flight (a submission Redis broke off): it waits on its slot
    -- until that create can no longer answer, which may leave the model without a free slot.
    if redis.call('ZCARD', slots) >= running then
      local first = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
      return {'', math.max(1, tonumber(first[2]) - now)}
    end
  end
end
"""
)

# The create call did not go through (throttled, DashScope failing): the task goes back to the head of
# its queue, gives back its slot, and the model pauses before anything else is sent. The attempt's
# in-flight marker ends; a create that may still answer (another attempt's, or this one's when the
# caller cannot tell whether it was sent: attempt '') keeps the task on its slot until it no longer can.
# ARGV: id, pause ms, attempt ('' for unknown)
REQUEUE = (
    COMMON
    + CREATES_IN_FLIGHT
    + """
local id, attempt = ARGV[1], ARGV[3] or ''
local task = redis.call('HMGET', TASK .. id, 'status', 'model', 'owner')
if task[1] ~= 'queued' then return 0 end
local marker = INFLIGHT .. id
if attempt ~= '' and redis.call('GET', marker) == attempt then redis.call('DEL', marker) end
if tonumber(ARGV[2]) > 0 then redis.call('SET', PAUSE .. task[2], '1', 'PX', ARGV[2]) end
if park(id, task[2], clock_ms()) then return 0 end
redis.call('ZREM', SLOTS .. task[2], id)
enqueue(id, task[2], task[3] or '', true)
wake()
return 1
"""
)

# An admitted task's submission begins: this attempt becomes the one that may look it up at DashScope
# and send it, for a lease its holder renews (HOLD_SUBMISSION).
# ARGV: id, attempt, lease ms
# Returns 'ok'; 'busy' when another attempt's create of it may still answer (the task is left to that
# one, on its slot); 'moved' when the task no longer waits.
CLAIM_SUBMISSION = (
    COMMON
    + CREATES_IN_FLIGHT
    + """
local id, attempt, lease = ARGV[1], ARGV[2], math.max(tonumber(ARGV[3]), 1)
local status, model = unpack(redis.call('HMGET', TASK .. id, 'status', 'model'))
if status ~= 'queued' then return 'moved' end
local now = clock_ms()
local marker = INFLIGHT .. id
local holder = redis.call('GET', marker)
if holder and holder ~= attempt and park(id, model, now) then return 'busy' end
redis.call('SET', marker, attempt, 'PX', lease)
hold_slot(id, model, now, lease)
return 'ok'
"""
)

# The attempt still holds its task: its marker and slot last at least another lease, and at least until
# the create's deadline. With an attempt time, the create is about to be sent: recorded on the task, so
# that a later attempt looks for it at DashScope before sending again.
# ARGV: id, attempt, lease ms, ms until the create's deadline (0: none yet), attempt time ('': none)
# Returns 1, or 0 when the attempt no longer holds the task (nothing may be sent then).
HOLD_SUBMISSION = (
    COMMON
    + CREATES_IN_FLIGHT
    + """
local id, attempt = ARGV[1], ARGV[2]
local key = TASK .. id
local marker = INFLIGHT .. id
if redis.call('GET', marker) ~= attempt then return 0 end
local status, model = unpack(redis.call('HMGET', key, 'status', 'model'))
if status ~= 'queued' then return 0 end
local ms = math.max(redis.call('PTTL', marker), tonumber(ARGV[3]), tonumber(ARGV[4]))
redis.call('PEXPIRE', marker, ms)
hold_slot(id, model, clock_ms(), ms)
if ARGV[5] ~= '' then redis.call('HSET', key, 'submit_attempt_at', ARGV[5]) end
return 1
"""
)

# The attempt ends without an answer recorded (MARK_SUBMITTED and REQUEUE end it otherwise): its marker
# goes, or lasts until its create's deadline when one may still answer.
# ARGV: id, attempt, ms to keep (0: none)
RELEASE_SUBMISSION = (
    KEY_NAMES
    + """
local marker = INFLIGHT .. ARGV[1]
if redis.call('GET', marker) ~= ARGV[2] then return 0 end
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', marker, ARGV[3]) else redis.call('DEL', marker) end
return 1
"""
)

# DashScope's account-wide query limit (reads, lists and cancels), shared by every process.
# KEYS: the window's key; ARGV: limit per window, window ms.
# Returns {0, member} (go: the member stands for the request in the window) or {ms to wait, ''}.
TAKE_TOKEN = """
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
"""

# A request has been answered: it counts in its window from now on. DashScope counted it when it
# arrived, somewhere between the send and the answer; counting from the answer keeps the next one a
# whole window after it, however long the request travelled. Added again if the window dropped it.
# KEYS: the window's key; ARGV: member, window ms.
RESTAMP = """
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[1], clock[1] * 1000 + math.floor(clock[2] / 1000), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"""


# Callback deliveries that are due, each leased to this sender for a while (a sender that dies gives
# them back when the lease ends). ARGV: how many, lease ms.
# Returns {webhook ids..., ms until the next one is due (-1: none)}.
CLAIM_CALLBACKS = (
    KEY_NAMES
    + """
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local due_key = CALLBACKS_DUE
local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, webhook_id in ipairs(due) do
  redis.call('ZADD', due_key, now + tonumber(ARGV[2]), webhook_id)
end
local next_one = redis.call('ZRANGE', due_key, 0, 0, 'WITHSCORES')
local wait = -1
if #next_one > 0 then wait = math.max(1, tonumber(next_one[2]) - now) end
due[#due + 1] = wait
return due
"""
)

# Claimed deliveries handed back unsent, due again after delay ms (0: at once), on Redis' clock like
# every score of the set. XX: one settled meanwhile (no longer in the set) stays settled.
# ARGV: delay ms, webhook ids...
DEFER_CALLBACKS = (
    KEY_NAMES
    + """
local clock = redis.call('TIME')
local at = clock[1] * 1000 + math.floor(clock[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', CALLBACKS_DUE, 'XX', at, ARGV[i])
end
return 1
"""
)

# Record an attempt's outcome and schedule the next (delay_ms >= 0) or none (-1).
# ARGV: task id, webhook id, delivery JSON, delay ms
SETTLE_CALLBACK = (
    KEY_NAMES
    + """
if redis.call('EXISTS', TASK .. ARGV[1]) == 0 then
  -- The task was deleted while this attempt was on its way: nothing of it is written back.
  redis.call('ZREM', CALLBACKS_DUE, ARGV[2])
  return 0
end
redis.call('HSET', DELIVERIES .. ARGV[1], ARGV[2], ARGV[3])
local delay = tonumber(ARGV[4])
if delay < 0 then
  redis.call('ZREM', CALLBACKS_DUE, ARGV[2])
else
  local clock = redis.call('TIME')
  redis.call('ZADD', CALLBACKS_DUE, clock[1] * 1000 + math.floor(clock[2] / 1000) + delay, ARGV[2])
end
return 1
"""
)


# Reserve disk space for a download in the ledger of its videos directory (diskspace.py), on Redis'
# clock. Entries are leases: a process that died stops renewing its own, and they lapse here. Each
# names its owner (the worker's consumer name), so a worker that lost a job to another cannot renew
# or give back the entry the other has made since; the task's place in line stays with the task.
# A download is granted its bytes when they fit in the room left: free space (measured by the caller
# just before) less the floor, less what other reservations have still to write, less what every
# download waiting longer needs (the oldest waiting one comes first; a need that could never fit the
# disk keeps no one else waiting). One that already holds at least as much keeps it. A refused
# download drops any reservation it held and waits in line, keeping its place (its first wait).
# Held entries read "<bytes still to write>:<expiry ms>:<owner>", waiting ones
# "<bytes needed>:<waiting since ms>:<expiry ms>:<owner>".
# KEYS: held, waiting; ARGV: task id, need, free, capacity, floor, lease ms, waiting since ms (0: now), owner
# Returns {granted (0/1), room left before waiters, reserved by others, needed by those ahead, since ms}.
RESERVE_DISK = """
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
"""

# Renew a download's lease in the disk ledger, held or waiting, if the entry is still its owner's; a
# held one also records the bytes it has still to write (ARGV[2], -1: unchanged). Returns 1 if it
# held a reservation, 2 if it was waiting, 0 if the ledger has no entry of this owner's for the task.
# KEYS: held, waiting; ARGV: task id, remaining, lease ms, owner
RENEW_DISK = """
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
"""

# Give back a download's entries in the disk ledger (held and waiting), those of its owner only.
# KEYS: held, waiting; ARGV: task id, owner
RELEASE_DISK = """
local released = 0
for _, key in ipairs(KEYS) do
  local entry = redis.call('HGET', key, ARGV[1])
  if entry and string.match(entry, ':([^:]*)$') == ARGV[2] then
    redis.call('HDEL', key, ARGV[1])
    released = released + 1
  end
end
return released
"""
