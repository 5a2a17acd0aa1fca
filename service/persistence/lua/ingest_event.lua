--! include: common
--! argc: 17
--! derives: the task the event's DashScope task id maps to, and that task's own keys
-- One completion event, recorded and applied in one step: dedupe, audit log, transition, next job.
-- Everything a stranger's event can leave behind is bounded (see keys.py): the audit entry, the
-- early record and the deduplication key.
-- ARGV: source, event id, DashScope task id, status, now, video url, code, message, foreign (0/1),
--       seen ttl, early ttl, log maxlen, the body as audit.py encodes it ('' when over EVENT_LOG_BODY_MAX),
--       the body's first bytes, its sha256 (hex), its size, the field the encoded body goes under (audit.py)
-- A function of its arguments (named ARGV, as the script's own), so that INGEST runs it on the script's ARGV
-- and INGEST_BATCH on each event's slice of its ARGV: both run the same code.
local function ingest(ARGV)
  local FIELD_MAX, EARLY_ID_MAX, EARLY_MAX, PREFIX_MAX = EVENT_LOG_FIELD_MAX, EARLY_EVENT_ID_MAX, EARLY_EVENTS_MAX,
    EVENT_LOG_PREFIX
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
      -- not kept, since no create call will ever claim it. Their number is bounded (EARLY_EVENTS): past
      -- EARLY_MAX the oldest goes (its task, if it is one, is read from DashScope by the sweeper). The
      -- event is recorded and acknowledged all the same.
      if #ds_id <= EARLY_ID_MAX then
        local clock = redis.call('TIME')
        local ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
        -- Ids whose record has expired by its TTL leave the count first (nothing to read from them).
        redis.call('ZREMRANGEBYSCORE', EARLY_EVENTS, '-inf', '(' .. (ms - tonumber(ARGV[11]) * 1000))
        local held = redis.call('ZCARD', EARLY_EVENTS)
        if held >= EARLY_MAX and not redis.call('ZSCORE', EARLY_EVENTS, ds_id) then
          local evicted = redis.call('ZPOPMIN', EARLY_EVENTS, held - EARLY_MAX + 1)
          for i = 1, #evicted, 2 do redis.call('DEL', EARLY_EVENT .. evicted[i]) end
          redis.call('HINCRBY', COUNTERS, 'events_early_evicted', #evicted / 2)
        end
        redis.call('ZADD', EARLY_EVENTS, ms, ds_id)
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
end
