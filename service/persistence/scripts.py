"""The Lua scripts behind every state change: each runs atomically inside Redis.

A state only moves forward (queued < submitted < downloading < terminal); whatever order or number
of times events arrive, a script either applies a change whole, with its side effects (index,
change stream, next job), or leaves everything as it was.

Each script is a file of ``lua/`` beside this module (a data folder, read with ``importlib.resources``, so
it is found the same way in a checkout and in the installed wheel), and ``load`` below is the one way
they are put together. A file begins with its header, lines ``--! name: value`` read by the loader:

- ``--! include: common ingest_event``: pieces of ``lua/`` (local functions shared by several scripts)
  put before the script's own text, in that order. A piece is put in once, never nested: its own
  ``include`` names the pieces it relies on, which the script must include before it.
- ``--! argc: N``: the script reads ARGV[1] .. ARGV[N] (``N+``: then any number more, read in a loop). A
  piece that reads its own arguments (ingest_event.lua's function) declares them too. tests/integration/test_scripts.py
  holds each declaration to the highest ARGV index its file reads.
- ``--! keys: N``: the script is given KEYS[1] .. KEYS[N]; the callers build them (the ``*_keys`` helpers
  below, or their own key of a window, a ledger or a job stream).
- ``--! derives: why``: the script (or piece) also builds keys inside, from what it reads, and says which
  and from what. Only such a file is given keys.py's names; one that derives nothing touches only its
  KEYS. A file declares ``keys``, ``derives`` or both; a script that derives and declares no keys is
  passed keys.ROUTE.

What Redis runs is, in this order: the preamble, the constants the caller passes to ``load`` (each a Lua
local of its name), each included piece, the script's own text. The preamble makes every int of
keys.py a Lua local of the same name (TASK_CHANGES_MAXLEN, DEAD_JOBS_MAXLEN, ...), and, for a script
that ``derives``, every key name of keys.py too (TASK, OWNER, COUNTERS, ...): the scripts spell no key
name of their own, so keys.py is the one place a name is written. A script that derives nothing is not
given the names: the keys it is passed are the only ones it can reach.

Keys. Redis' EVAL documentation (https://redis.io/docs/latest/commands/eval/) asks that "to ensure the
correct execution of scripts, both in standalone and clustered deployments, all names of keys that a
script accesses must be explicitly provided as input key arguments": on a cluster the keys tell the
client which node runs the script, and the node refuses a key of another slot.

Given all their keys in KEYS: CLAIM_CALLBACKS, DEFER_CALLBACKS, SETTLE_CALLBACK, DROP_VIDEO,
RELEASE_SUBMISSION, HOLD_JOB, TAKE_TOKEN, RESTAMP, RESERVE_DISK, RENEW_DISK, RELEASE_DISK.

Given some in KEYS (a job stream and its dead-letter stream) and deriving the rest: DEAD_LETTER_JOB,
REPLAY_JOB.

Deriving their keys inside, passed keys.ROUTE: all the others, because the names depend on what only
the script reads, in the same atomic step (each file's ``derives`` line says what; tests/integration/test_scripts.py
holds these lists to the headers):

- CREATE: the task an Idempotency-Key names (read from that key). Its other keys the caller could name
  (it knows the task's id, owner and models); one derived key keeps it among these.
- TRANSITION, JOB_MISSING, DEAD_LETTER_JOB (through ``transition``), MARK_SUBMITTED, DELETE, and INGEST
  and INGEST_BATCH (through ``apply``) derive a task's keys: the model's slots and queue, the owner's
  indexes, the deliveries' bodies and the DashScope task's mapping come from the task's hash; INGEST
  finds the task itself from the DashScope task id of the event (keys.DASHSCOPE_TASK).
- REPLAY_JOB: the task is named by the dead letter it reads.
- ADMIT: the queue of the submitter whose turn it is (popped from the rotation), the tasks of expired
  leases (read from the slots).
- REQUEUE, CLAIM_SUBMISSION, HOLD_SUBMISSION: the model (slots, pause) and owner (queue) are the task's.
- INDEX_OWNERS, INDEX_ENDED: the tasks of a batch of the index of all tasks.

They stay correct on a Redis Cluster because every name of keys.py carries the ``{wanhook}`` hash tag,
so all of them live in one slot, and each of these scripts is given a key of that slot (keys.ROUTE, or
its streams) so the client sends it to that slot's node; tests/system/test_redis_topologies.py runs them
against a cluster.
The way to declare them all would be two phases: a read (a plain command or a read-only script) that
returns the names (the task's model and owner, its DashScope id, the rotation's next submitter), then
the script given all of them as KEYS, which checks that what it derived them from has not changed
meanwhile (the task's status and model, the rotation's head) and answers "retry" when it has. That
costs a round trip per change and a retry loop in every caller; it buys nothing on one slot, and is
what a move away from the single hash tag (tasks spread over slots) would need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from . import keys

# The package's data folder: resources.files reads it from wherever the package is imported from (a
# checkout, an editable install, the wheel; pyproject.toml's package-data ships it).
LUA = resources.files(__name__.rpartition(".")[0]) / "lua"


def _lua_string(text: str) -> str:
    # Key names are plain ASCII; anything that would need escaping in Lua is refused, not escaped.
    if not re.fullmatch(r"[A-Za-z0-9{}:_.-]*", text):
        raise ValueError(f"not a plain key name: {text!r}")
    return "'" + text + "'"


def _locals(values: dict[str, object]) -> str:
    return "".join(f"local {name} = {value}\n" for name, value in values.items())


# The preamble's two parts (see the module's docstring). keys.ROUTE, a list, is the caller's, not the scripts'.
CONSTANTS = _locals({name: value for name, value in vars(keys).items() if name.isupper() and type(value) is int})
KEY_NAMES = _locals(
    {name: _lua_string(value) for name, value in vars(keys).items() if name.isupper() and isinstance(value, str)}
)


@dataclass(frozen=True)
class Script:
    name: str
    # What Redis runs: preamble, constants, pieces, the file's own text.
    text: str
    # The file's own text, and what its header declares (None: nothing).
    source: str
    includes: tuple[str, ...]
    argc: int | None
    more_args: bool
    keys: int | None
    derives: str | None


def _text(name: str) -> str:
    return (LUA / f"{name}.lua").read_text(encoding="utf-8")


def _header(source: str, name: str) -> dict[str, str]:
    """A script's header, its leading ``--! name: value`` lines."""
    header: dict[str, str] = {}
    for line in source.splitlines():
        if not line.startswith("--! "):
            break
        directive, colon, value = line[4:].partition(": ")
        if not colon or directive not in ("include", "argc", "keys", "derives") or directive in header:
            raise ValueError(f"lua/{name}.lua: header line not understood: {line!r}")
        header[directive] = value.strip()
    return header


def build(source: str, name: str = "<script>", **constants: int) -> Script:
    """The script of ``source`` (a file of lua/, named ``name``), put together as the module's docstring
    says. ``constants`` become Lua locals of their names, after the preamble (INGEST_BATCH's INGEST_ARGC)."""
    header = _header(source, name)
    if "keys" not in header and "derives" not in header:
        raise ValueError(f"lua/{name}.lua declares neither its keys nor what it derives")
    includes = tuple(header.get("include", "").split())
    pieces = []
    for n, piece in enumerate(includes):
        text = _text(piece)
        piece_header = _header(text, piece)
        for needed in piece_header.get("include", "").split():
            if needed not in includes[:n]:
                raise ValueError(f"lua/{name}.lua includes {piece} without {needed} before it")
        if "derives" in piece_header and "derives" not in header:
            raise ValueError(f"lua/{name}.lua includes {piece}, which derives keys, and does not say it derives")
        pieces.append(f"-- lua/{piece}.lua\n{text}")
    argc = header.get("argc")
    preamble = CONSTANTS + (KEY_NAMES if "derives" in header else "") + _locals(dict(constants))
    return Script(
        name=name,
        text=preamble + "".join(pieces) + f"-- lua/{name}.lua\n{source}",
        source=source,
        includes=includes,
        argc=int(argc.rstrip("+")) if argc else None,
        more_args=bool(argc and argc.endswith("+")),
        keys=int(header["keys"]) if "keys" in header else None,
        derives=header.get("derives"),
    )


def load(name: str, **constants: int) -> Script:
    """The script of lua/<name>.lua (see ``build``)."""
    return build(_text(name), name, **constants)


def argc(piece: str) -> int:
    """The arguments a file of lua/ declares that it reads."""
    count = load(piece).argc
    if count is None:
        raise ValueError(f"lua/{piece}.lua declares no argc")
    return count


# The scripts, by the names their callers use. Each file's head says what it does, what it is given and
# what it answers.
CREATE = load("create").text
INDEX_OWNERS = load("index_owners").text
INDEX_ENDED = load("index_ended").text
TRANSITION = load("transition").text
MARK_SUBMITTED = load("mark_submitted").text
INGEST = load("ingest").text
# How many arguments INGEST reads, as ingest_event.lua declares them; INGEST_BATCH takes them per event.
INGEST_ARGC = argc("ingest_event")
INGEST_BATCH = load("ingest_batch", INGEST_ARGC=INGEST_ARGC).text
DELETE = load("delete").text
DROP_VIDEO = load("drop_video").text
DEAD_LETTER_JOB = load("dead_letter_job").text
REPLAY_JOB = load("replay_job").text
JOB_MISSING = load("job_missing").text
HOLD_JOB = load("hold_job").text
ADMIT = load("admit").text
REQUEUE = load("requeue").text
CLAIM_SUBMISSION = load("claim_submission").text
HOLD_SUBMISSION = load("hold_submission").text
RELEASE_SUBMISSION = load("release_submission").text
TAKE_TOKEN = load("take_token").text
RESTAMP = load("restamp").text
CLAIM_CALLBACKS = load("claim_callbacks").text
DEFER_CALLBACKS = load("defer_callbacks").text
SETTLE_CALLBACK = load("settle_callback").text
RESERVE_DISK = load("reserve_disk").text
RENEW_DISK = load("renew_disk").text
RELEASE_DISK = load("release_disk").text


# The KEYS of the scripts that declare theirs, in the order their files read them.


def release_submission_keys(task_id: str) -> list[str]:
    return [keys.INFLIGHT + task_id]


CALLBACKS_KEYS = [keys.CALLBACKS_DUE]  # CLAIM_CALLBACKS, DEFER_CALLBACKS


def settle_callback_keys(task_id: str) -> list[str]:
    return [keys.TASK + task_id, keys.DELIVERIES + task_id, keys.CALLBACKS_DUE, keys.CALLBACK_DEAD, keys.COUNTERS]


def drop_video_keys(task_id: str) -> list[str]:
    return [keys.TASK + task_id, keys.VIDEOS_KEPT, keys.TASKS_ENDED, keys.OBJECTS_TO_REMOVE]


def job_streams_keys(stream: str, dead: str) -> list[str]:
    """DEAD_LETTER_JOB and REPLAY_JOB: a kind's job stream and its dead-letter stream (keys.DOWNLOAD_JOBS and
    keys.DOWNLOAD_DEAD, ...)."""
    return [stream, dead]
