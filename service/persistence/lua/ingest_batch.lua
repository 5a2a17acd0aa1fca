--! include: common ingest_event
--! argc: 0+
--! derives: each event's task, from its DashScope task id (ingest_event.lua)
-- Several events, each exactly as INGEST records it, in one call (group_commit.py): ARGV holds each
-- event's INGEST_ARGC arguments one after another. Each event runs in its own pcall, so one that fails
-- (a write refused) fails alone, with what it had written so far kept, as INGEST alone would; the
-- others still run. Returns, per event in order, INGEST's reply or the event's own error.
-- ARGV: INGEST_ARGC arguments per event (ingest_event.lua's argc, given by the loader: scripts.py).
local replies = {}
for first = 0, #ARGV - 1, INGEST_ARGC do
  local argv = {}
  for n = 1, INGEST_ARGC do argv[n] = ARGV[first + n] end
  local ok, reply = pcall(ingest, argv)
  if not ok and not (type(reply) == 'table' and reply.err) then reply = {err = tostring(reply)} end
  replies[#replies + 1] = reply
end
return replies
