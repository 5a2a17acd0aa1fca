-- wrk: POST a distinct completion CloudEvent per request, each for one of N known DashScope tasks.
local counter = 0

local tasks = tonumber(os.getenv("BENCH_TASKS") or "1000")
local token = os.getenv("BENCH_TOKEN") or ""

function setup(thread)
  thread:set("thread_id", counter)
  counter = counter + 1
end

function init(args)
  n = 0
end

function request()
  n = n + 1
  local task = (n * 2 + thread_id) % tasks
  local body = string.format('{"specversion":"1.0","id":"bench-%d-%d","source":"acs.dashscope",'
    .. '"type":"dashscope:System:AsyncTaskFinish","time":"2026-11-25T01:45:16.969Z",'
    .. '"data":{"task_id":"ds-%d","task_status":"SUCCEEDED","contain_result":false,'
    .. '"user_api_unique_key":"apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus"}}',
    thread_id, n, task)
  return wrk.format("POST", "/v1/events/dashscope",
    {["Content-Type"] = "application/json", ["x-eventbridge-signature-token"] = token}, body)
end
