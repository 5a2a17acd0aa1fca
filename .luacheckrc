-- luacheck (`make lint`) on the scripts of service/persistence/lua, as Redis runs them.
--
-- Redis runs scripts in Lua 5.1 with its own globals: redis, KEYS, ARGV and the cjson library are the ones
-- these scripts use ("Lua API", https://redis.io/docs/latest/develop/interact/programmability/lua-api/).
-- The loader (service/persistence/scripts.py) puts a preamble before each file: the ints of keys.py, and the
-- key names of keys.py for a file that derives keys (`--! derives: ...`); then the pieces the file
-- includes (`--! include: ...`). Those are locals Redis sees, and globals here: each file is given
-- exactly the names the loader gives it, so that a name it is not given is an undefined global.
-- tests/integration/test_scripts.py holds the two lists below to the loader's.
std = "lua51"
max_line_length = 120

local redis_globals = {"redis", "KEYS", "ARGV", "cjson"}

-- scripts.CONSTANTS
local constants = {
  "EVENT_SEEN_TTL_SECONDS", "EARLY_EVENT_TTL_SECONDS", "EVENT_LOG_MAXLEN", "DELETED_TTL_SECONDS",
  "EVENT_LOG_BODY_MAX", "EVENT_LOG_PREFIX", "EVENT_LOG_FIELD_MAX", "EVENT_LOG_ENTRY_MAX_BYTES", "EVENT_CODE_MAX",
  "EVENT_MESSAGE_MAX", "EVENT_URL_MAX", "EARLY_EVENT_ID_MAX", "EARLY_EVENTS_MAX", "TASK_CHANGES_MAXLEN",
  "DEAD_JOBS_MAXLEN", "TASK_CHANGES_TTL_MS",
}

-- scripts.KEY_NAMES
local key_names = {
  "PREFIX", "TASK", "TASK_CHANGES", "SETTINGS", "INSTALLATION", "TASKS_INDEX", "TASKS_ALL", "TASKS_BY_STATUS",
  "OWNER", "OWNER_INDEX_READY", "DASHSCOPE_TASK", "EARLY_EVENT", "EARLY_EVENTS", "EVENT_SEEN", "EVENT_LOG",
  "REPLICATION_BARRIER", "IDEMPOTENCY", "QUEUE", "ROTATION", "SLOTS", "INFLIGHT", "ORPHANS", "SUBMIT_RATE",
  "READ_RATE", "API_RATE", "PAUSE", "WAKE", "SWEEP", "SWEEPER_LEADER", "DOWNLOAD_JOBS", "DOWNLOAD_GROUP",
  "FAILURE_JOBS", "FAILURE_GROUP", "DELIVERIES", "CALLBACKS_DUE", "CALLBACK_BODY", "CALLBACKS_WAKE", "FEED_WAKE",
  "DEAD_LETTERS", "DOWNLOAD_DEAD", "FAILURE_DEAD", "CALLBACK_DEAD", "DISK_HELD", "DISK_WAITING", "TASKS_ENDED",
  "VIDEOS_KEPT", "RETENTION_INDEX_READY", "DELETED", "OBJECTS_TO_REMOVE", "COUNTERS", "CALLBACK_SECRET",
}

-- Constants a script is given by name (scripts.load(name, ...)).
local given = {ingest_batch = {"INGEST_ARGC"}}

local folder = "service/persistence/lua/"

local function join(...)
  local all = {}
  for _, names in ipairs({...}) do
    for _, name in ipairs(names) do all[#all + 1] = name end
  end
  return all
end

-- A file's header (`--! name: value` lines), as the loader reads it.
local function header(name)
  local found = {}
  for line in io.lines(folder .. name .. ".lua") do
    local directive, value = line:match("^%-%-! (%w+): (.*)$")
    if not directive then break end
    found[directive] = value
  end
  return found
end

-- The locals a piece defines at its top level: what the files that include it are given.
local function defined(name)
  local names = {}
  for line in io.lines(folder .. name .. ".lua") do
    local defined_name = line:match("^local function ([%w_]+)") or line:match("^local ([%w_]+) =")
    if defined_name then names[#names + 1] = defined_name end
  end
  return names
end

local lfs = require("lfs")
local headers, pieces = {}, {}
for file in lfs.dir(folder) do
  local name = file:match("^(.-)%.lua$")
  if name then
    headers[name] = header(name)
    for piece in (headers[name].include or ""):gmatch("%S+") do pieces[piece] = true end
  end
end
for name, head in pairs(headers) do
  local read = join(redis_globals, constants, head.derives and key_names or {}, given[name] or {})
  for piece in (head.include or ""):gmatch("%S+") do read = join(read, defined(piece)) end
  -- A piece's own locals are for the files that include it: not unused for being unused in the piece.
  local ignore = {}
  if pieces[name] then
    for _, piece_local in ipairs(defined(name)) do ignore[#ignore + 1] = "211/" .. piece_local end
  end
  files[folder .. name .. ".lua"] = {read_globals = read, ignore = ignore}
end
