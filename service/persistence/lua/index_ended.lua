--! include: common
--! argc: 2
--! derives: the tasks of a batch read from the index of all tasks
-- Tasks that ended before the retention indexes existed, added to them: one batch of the index of all
-- tasks, after the member ``after`` ('' from the start), each at the time it was created (when it ended
-- is not kept; a task ends within a day of its creation, its video URL's lifetime). NX: a task the
-- scripts indexed meanwhile keeps its own time.
-- ARGV: after, batch size. Returns {the batch's last member ('' once the index is done), tasks read}.
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
