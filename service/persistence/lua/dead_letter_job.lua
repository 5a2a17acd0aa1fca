--! include: common
--! keys: 2
--! argc: 9
--! derives: the task's keys when the job's task is ended failed (transition, common.lua)
-- A job whose attempts are spent (jobs.py), in one step: written to its kind's dead-letter stream, taken
-- off its job stream (acknowledged and deleted), and its task, if still in the state the job works on,
-- ended failed with the error job_dead_lettered (the cause, the attempts, and the dead letter's id to
-- replay it by). Only while this consumer still holds the job: one taken over meanwhile is the other
-- worker's to finish or dead-letter.
-- KEYS: job stream, dead-letter stream (scripts.job_streams_keys)
-- ARGV: group, consumer, entry id, kind, task id, the status the job works on, deliveries, cause, now
-- Returns the dead letter's entry id, or '' when the job is no longer this consumer's.
local stream, dead = KEYS[1], KEYS[2]
local group, consumer, entry, kind, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local works_on, deliveries, cause, now = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local pending = redis.call('XPENDING', stream, group, entry, entry, 1)
if #pending == 0 or pending[1][2] ~= consumer then return '' end
local letter = redis.call('XADD', dead, 'MAXLEN', '~', DEAD_JOBS_MAXLEN, '*', 'kind', kind, 'task', id,
  'job', entry, 'deliveries', deliveries, 'cause', cause, 'at', now)
redis.call('XACK', stream, group, entry)
redis.call('XDEL', stream, entry)
if works_on ~= '' and redis.call('HGET', TASK .. id, 'status') == works_on then
  local error = cjson.encode({code = 'job_dead_lettered',
    message = 'its ' .. kind .. ' job was given up after ' .. deliveries .. ' attempts: ' .. cause,
    dead_letter = kind .. ':' .. letter, attempts = tonumber(deliveries)})
  transition(id, 'failed', now, {'error', error})
end
redis.call('HINCRBY', COUNTERS, 'jobs_dead_lettered|kind=' .. kind, 1)
return letter
