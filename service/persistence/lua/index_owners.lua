--! include: common
--! argc: 2
--! derives: the tasks of a batch read from the index of all tasks
-- Tasks stored before the submitters' indexes existed, added to them: one batch of the index of all
-- tasks, after the member ``after`` ('' from the start). Each task goes to the index of the status it
-- has as the batch runs, so a change made meanwhile by ``transition`` is never undone.
-- ARGV: after, batch size. Returns {the batch's last member ('' once the index is done), tasks read}.
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
