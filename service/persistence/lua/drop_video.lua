--! keys: 4
--! argc: 3
-- A stored video removed by retention: the task stays, its video reads null with the reason why
-- (video_removed), and it moves from the index of kept videos to that of the other ended tasks. The
-- caller removes the file the answer names.
-- ARGV: id, reason JSON, '1' when the video is in an object store (its removal is then owed, as in DELETE)
-- KEYS: the task's hash (keys.TASK + id), keys.VIDEOS_KEPT, keys.TASKS_ENDED, keys.OBJECTS_TO_REMOVE
--   (scripts.drop_video_keys)
-- Returns '1' when it had a video, '' when it has none (any more).
-- The fixed keys go by keys.py's names.
local key, VIDEOS_KEPT, TASKS_ENDED, OBJECTS_TO_REMOVE = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
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
