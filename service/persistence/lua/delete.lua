--! include: common
--! argc: 3
--! derives: the task's model, owner, DashScope task and deliveries, read from its hash
-- An ended task and everything kept for it, removed in one step (DELETE /v1/tasks/{id}, retention): its
-- hash, its indexes (all, by status, its owner's, retention's), its change stream, its queue place, slot
-- and sweeper watch, its callback deliveries (their due times and frozen bodies). Its DashScope task's
-- mapping is kept for tombstone ttl seconds (removed when 0), so that a late completion event finds the
-- task gone (stale) instead of being kept as an early event; so is a tombstone naming its owner. The
-- video file is the caller's to remove: the script answers where it was.
-- A task that has not ended is left alone: the caller cancels it first.
-- ARGV: id, tombstone ttl seconds (0: none), '1' when the video is in an object store: the removal of the
--   object is then recorded as owed (keys.OBJECTS_TO_REMOVE) in the same step, settled by the caller
-- Returns {'deleted', '1' if it had a video ('' if not), deliveries removed, change stream removed (0/1),
--   index entries removed}, {'active', status}, {'gone', owner} (deleted before: its tombstone) or
--   {'missing', ''}.
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
