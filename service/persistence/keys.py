"""Every Redis key wanhook uses, in one place: the whole data model on one screen.

All keys share the hash tag ``{wanhook}`` so that the Lua scripts, which touch several keys at once,
run unchanged on a Redis Cluster (one slot).
"""

PREFIX = "{wanhook}"
# The scripts that derive their keys inside receive every name below from here (scripts.KEY_NAMES) and are
# passed this one key, which sends them to the node that serves the {wanhook} slot on a cluster; the others
# are passed every key they touch (scripts.py says which).
ROUTE = [PREFIX + ":route"]

# hash per task: the fields of the public task plus internal ones (video URL, download validators).
TASK = PREFIX + ":task:"
# stream per task: one entry per state change; the SSE endpoint reads it and resumes by entry id.
# Once the task has ended it expires after SETTINGS' changes_ttl_ms (the task's final state stays).
TASK_CHANGES = PREFIX + ":changes:"
# hash: settings every process must apply alike inside the scripts (changes_ttl_ms).
SETTINGS = PREFIX + ":settings"
# hash: the settings every process of one installation must share (installation.py: the storage, retention,
# the data directory's role), recorded by the first process to start; a process that disagrees refuses to
# start. `wanhook installation record` replaces them on purpose.
INSTALLATION = PREFIX + ":installation"
# sorted sets (all scores 0) whose members are "<created ms, 13 digits>:<task id>", for cursor paging.
TASKS_INDEX = ":tasks"
TASKS_ALL = PREFIX + TASKS_INDEX
TASKS_BY_STATUS = TASKS_ALL + ":"  # + status
# The same indexes per submitter (API token digest; "" when the API is open), kept by the same scripts,
# so that listing one token's tasks reads a page of its own, however many tasks the others have.
# Owner digests are hex, so the owner part never holds a colon. See owner_tasks() below.
OWNER = PREFIX + ":owner:"  # + owner + TASKS_INDEX, or + owner + TASKS_INDEX + ":" + status
# string: the per-submitter indexes hold every task (tasks stored before they existed were added once).
OWNER_INDEX_READY = PREFIX + ":owner-index-ready"
# string: DashScope task id -> wanhook task id.
DASHSCOPE_TASK = PREFIX + ":ds:"
# string: a completion event that arrived before the create call returned its DashScope task id.
EARLY_EVENT = PREFIX + ":early:"
# sorted set: the DashScope task ids that have an early record (EARLY_EVENT), scored by when it was kept
# (ms, Redis clock). It bounds their number: past EARLY_EVENTS_MAX the oldest record goes.
EARLY_EVENTS = PREFIX + ":early-events"
# string per CloudEvent ("<len(source)>:<source>:<id>"), with a TTL: at-least-once delivery made harmless.
EVENT_SEEN = PREFIX + ":seen:"
# stream: every completion event received, whatever its outcome (audit and replay); audit.py reads it.
EVENT_LOG = PREFIX + ":events"
# string: written after each write wanhook waits for replicas of (replication.py), so that WAIT waits for
# everything the primary had then, even when the write itself changed nothing (a duplicate).
REPLICATION_BARRIER = PREFIX + ":replicated"
# string: Idempotency-Key of POST /v1/tasks -> task id. The task's hash keeps the digest of the request
# (field request_digest), so that the key reused with another body is told apart.
IDEMPOTENCY = PREFIX + ":idem:"
# Admission (quota.py): a queued task waits in a list per model and submitter (API token digest); the
# submitters with waiting tasks take turns through the rotation list of the model.
QUEUE = PREFIX + ":queue:"  # + model + ":" + owner
ROTATION = PREFIX + ":rotation:"  # + model
# sorted set per model: task id -> lease expiry (ms, Redis clock) of the DashScope slot it holds.
SLOTS = PREFIX + ":slots:"  # + model
# string per task with a TTL, while a create of it may still answer: the id of the attempt that sends it.
# Set before the task is looked up or sent, renewed with its slot while the call runs, kept until the
# call's deadline (plus DashScope's slack to land it) has passed; nobody else sends the task meanwhile.
INFLIGHT = PREFIX + ":inflight:"  # + task id
# hash: DashScope task id -> JSON {task, status, at} of a create that landed for a task which had moved
# on (sent again after its sender froze past every deadline, or ended): left running, never mapped to
# the task, never adopted by another, and counted as submissions_orphaned for an operator to look at.
ORPHANS = PREFIX + ":orphans"
# sorted sets: sliding windows of submissions per model, and of reads for the whole account.
SUBMIT_RATE = PREFIX + ":rate:submit:"  # + model
READ_RATE = PREFIX + ":rate:reads"
API_RATE = PREFIX + ":rate:api:"  # + owner: client API requests per token
# string with a TTL: DashScope throttled or failed a create; the model waits this long.
PAUSE = PREFIX + ":pause:"  # + model
# list: a slot was given back or a task queued; a dispatcher blocked on it wakes up and admits.
WAKE = PREFIX + ":wake"
# sorted set: submitted task id -> when the sweeper reads it if no completion event came (ms).
SWEEP = PREFIX + ":sweep"
# string with a TTL: which process runs the sweeper.
SWEEPER_LEADER = PREFIX + ":sweeper"
# job stream, read by the consumer group of download workers.
DOWNLOAD_JOBS = PREFIX + ":jobs:download"
DOWNLOAD_GROUP = "downloaders"
# job stream, read by the consumer group of failure readers: a task DashScope reported FAILED without a
# reason waits here (still "submitted", its hash marked awaiting_reason) for the one read that fetches
# DashScope's code and message (failures.py); it turns failed once that is recorded.
FAILURE_JOBS = PREFIX + ":jobs:failure"
FAILURE_GROUP = "failure-readers"
# Callbacks to submitters (callbacks.py): a hash per task (webhook id -> delivery JSON), the due times of
# deliveries (ms; score 0: at once), the frozen body of each delivery, and the senders' wake-up list.
DELIVERIES = PREFIX + ":deliveries:"  # + task id
CALLBACKS_DUE = PREFIX + ":callbacks:due"
CALLBACK_BODY = PREFIX + ":callback-body:"  # + webhook id
CALLBACKS_WAKE = PREFIX + ":callbacks:wake"
# stream per process and change-feed reader: woken up when a stream starts following a task (feed.py).
FEED_WAKE = PREFIX + ":feed:"  # + process name + ":" + reader number
# stream: messages a transport gave up on (RocketMQ after too many deliveries), with the reason.
DEAD_LETTERS = PREFIX + ":dead-letters"
# Dead letters of wanhook's own jobs (jobs.py), a stream per job stream: a job whose attempts are spent
# (WANHOOK_JOB_MAX_ATTEMPTS: each delivery of it, and each exception of its handler, is one) lands here
# with its task, the cause and the number of deliveries, in the same step that acknowledges it and ends
# its task; ``POST /v1/dead-letters/{id}/replay`` (or ``wanhook dead-letters replay``) queues it again.
# A callback delivery that is dead (its schedule spent, or WANHOOK_JOB_MAX_ATTEMPTS errors) is written to
# the third. Each is bounded (DEAD_JOBS_MAXLEN, approximately).
DOWNLOAD_DEAD = PREFIX + ":dead:download"
FAILURE_DEAD = PREFIX + ":dead:failure"
CALLBACK_DEAD = PREFIX + ":dead:callback"
# Disk space for downloads (diskspace.py), one ledger per videos directory (+ its absolute path), shared
# by every process writing into it: hashes task id -> "<bytes still to write>:<lease expiry ms>" of the
# downloads holding a reservation, and task id -> "<bytes needed>:<waiting since ms>:<lease expiry ms>" of
# the downloads waiting for room.
DISK_HELD = PREFIX + ":disk:held:"  # + videos directory
DISK_WAITING = PREFIX + ":disk:waiting:"  # + videos directory
# Deletion and retention (retention.py, DELETE /v1/tasks/{id}).
# Two sorted sets of ended task id -> when it ended (ms, Redis clock), the retention sweep reading the
# oldest first; each ended task is in one of them (an index entry costs some 130 bytes a task): the
# ready tasks whose video is kept (stored when the task ended), and the others (failed, canceled,
# expired, and ready tasks whose video was removed). Tasks stored by versions before this was so may be
# in both, which changes nothing but their cost until they go.
TASKS_ENDED = PREFIX + ":ended"
VIDEOS_KEPT = PREFIX + ":videos"
# string: the retention indexes hold every ended task (tasks that ended before they existed were added once).
RETENTION_INDEX_READY = PREFIX + ":retention-index-ready"
# string per deleted task with a TTL (DELETED_TTL_SECONDS): its owner. A second DELETE is answered as
# done, and a create whose answer lands after the deletion is canceled at DashScope, not left running.
DELETED = PREFIX + ":deleted:"  # + task id
# sorted set: task id -> when the removal of its video from the object store is next tried (ms, Redis
# clock; 0: at once). With videos in an object store, the script that removes a task's records (or its
# video, by retention) records the removal it owes here, in the same step; the entry goes once the object
# is gone (removals.py). A store that is down when a task is deleted thus leaves no object behind for good:
# the elected sweeper tries again each round until the store answers.
OBJECTS_TO_REMOVE = PREFIX + ":objects:remove"
# hash: counters (events by outcome, downloads, ...), read by /metrics.
COUNTERS = PREFIX + ":counters"
# string: the whsec_ secret that signs outgoing callbacks when none is configured.
CALLBACK_SECRET = PREFIX + ":callback-secret"

# A delivery is retried for at most a day: EventBridge's default policy retries 3 times 10-20 s apart, its
# exponential-decay policy up to 176 times within one day ("Retry policies and dead-letter queues",
# https://www.alibabacloud.com/help/en/eventbridge/user-guide/retry-and-dead-letter); RocketMQ's
# redeliveries end within hours. An hour's margin over that day. A copy arriving later still changes
# nothing (a known task is past it: stale), it is only no longer told apart as a duplicate.
EVENT_SEEN_TTL_SECONDS = 25 * 3600
EARLY_EVENT_TTL_SECONDS = 24 * 3600
EVENT_LOG_MAXLEN = 100_000
# A deleted task's tombstone, and its DashScope task id's mapping (so that a late completion event finds
# nothing to apply rather than waiting as an early event): a day, EventBridge's longest retry horizon.
DELETED_TTL_SECONDS = 24 * 3600
# The audit stream is bounded by size as well as by count: an event of a task wanhook knows keeps its
# body whole up to EVENT_LOG_BODY_MAX bytes (DashScope's are under 1 KB; kept deflated, see audit.py,
# as is any event's whose deflated body fits in EVENT_LOG_PREFIX bytes); any other event (a task
# wanhook does not know, another product's, a duplicate) or a larger body keeps its sha256, its size
# and its first EVENT_LOG_PREFIX bytes. Identifiers are clipped to EVENT_LOG_FIELD_MAX bytes. An
# entry thus holds at most about 5 KiB (EVENT_LOG_ENTRY_MAX_BYTES), the stream at most
# EVENT_LOG_MAXLEN times that (about 500 MB), and events nobody can tie to a task about 1.6 KB each.
EVENT_LOG_BODY_MAX = 4096
EVENT_LOG_PREFIX = 512
EVENT_LOG_FIELD_MAX = 256
EVENT_LOG_ENTRY_MAX_BYTES = EVENT_LOG_BODY_MAX + 64 + 3 * EVENT_LOG_FIELD_MAX + 256
# What an event may leave on a task or in its early record (EARLY_EVENT): DashScope's codes and messages
# are short, and its task ids 36 characters. A longer video URL is dropped, not cut (a cut URL is
# useless): the download then reads the task from DashScope for it.
EVENT_CODE_MAX = 128
EVENT_MESSAGE_MAX = 1024
EVENT_URL_MAX = 4096
EARLY_EVENT_ID_MAX = 128
# At most this many early records at once (EARLY_EVENTS), the oldest dropped to keep a new one: whoever can
# send events for ids no create claims (a RocketMQ publisher, a webhook token holder) then holds at most
# about EARLY_EVENTS_MAX times 5.5 KB of Redis, not 5.5 KB per event for a day. A real early record is
# needed only between DashScope's answer to a create and wanhook recording it (milliseconds; as many at
# once as creates in flight), so it is the oldest only if thousands of events came in that moment; and
# one dropped loses nothing: its task stays submitted and the sweeper reads it from DashScope once its
# completion event is overdue.
EARLY_EVENTS_MAX = 1_000
TASK_CHANGES_MAXLEN = 1_000
DEAD_JOBS_MAXLEN = 10_000
TASK_CHANGES_TTL_MS = 3600 * 1000  # when SETTINGS has none


def owner_tasks(owner: str, status: str | None = None) -> str:
    """The index of the submitter's tasks (of one status, or all); the scripts' owner_index builds the
    same names from the same parts (a test holds the two together)."""
    return OWNER + owner + TASKS_INDEX + (":" + status if status else "")
