--! include: common ingest_event
--! derives: the task the event's DashScope task id maps to (ingest_event.lua)
-- One completion event (ingest_event.lua): its arguments are the script's.
return ingest(ARGV)
