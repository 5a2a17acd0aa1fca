"""What must hold of wanhook's Redis state at every moment, checked on one atomic snapshot.

Every state change is one Lua script, so between scripts the data model is consistent. The snapshot is
taken by a Lua script too, so the check is exact even while workers and requests keep changing things.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from wanhook.service.domain.task import STATUSES, Outcome
from wanhook.service.persistence.scripts import KEY_NAMES

# Everything the checks need, read in one step. Task hashes carry user text (prompts), so only the
# fields that matter leave Redis; the event log's bodies stay there too.
SNAPSHOT = (
    KEY_NAMES
    + """
local function text(value) if value == false or value == nil then return '' end return value end
local function after(key, head) return string.sub(key, #head + 1) end
local snapshot = {tasks = {}, indexes = {}, owner_indexes = {}, queues = {}, rotations = {}, slots = {},
  sweep = {}, ds = {}, outcomes = {}, jobs = {}, failure_jobs = {}, deleted = {}}
for _, key in ipairs(redis.call('KEYS', TASK .. '*')) do
  local fields = redis.call('HMGET', key, 'id', 'status', 'created_ms', 'model', 'owner', 'ds_task_id',
    'awaiting_reason')
  snapshot.tasks[after(key, TASK)] = {id = text(fields[1]), status = text(fields[2]),
    created_ms = text(fields[3]), model = text(fields[4]), owner = text(fields[5]), ds_task_id = text(fields[6]),
    awaiting_reason = text(fields[7])}
end
snapshot.indexes['*'] = redis.call('ZRANGE', TASKS_ALL, 0, -1)
for _, key in ipairs(redis.call('KEYS', TASKS_BY_STATUS .. '*')) do
  snapshot.indexes[after(key, TASKS_BY_STATUS)] = redis.call('ZRANGE', key, 0, -1)
end
for _, key in ipairs(redis.call('KEYS', OWNER .. '*')) do
  snapshot.owner_indexes[after(key, OWNER)] = redis.call('ZRANGE', key, 0, -1)
end
for _, key in ipairs(redis.call('KEYS', QUEUE .. '*')) do
  snapshot.queues[after(key, QUEUE)] = redis.call('LRANGE', key, 0, -1)
end
for _, key in ipairs(redis.call('KEYS', ROTATION .. '*')) do
  snapshot.rotations[after(key, ROTATION)] = redis.call('LRANGE', key, 0, -1)
end
for _, key in ipairs(redis.call('KEYS', SLOTS .. '*')) do
  snapshot.slots[after(key, SLOTS)] = redis.call('ZRANGE', key, 0, -1)
end
snapshot.sweep = redis.call('ZRANGE', SWEEP, 0, -1)
for _, key in ipairs(redis.call('KEYS', DASHSCOPE_TASK .. '*')) do
  snapshot.ds[after(key, DASHSCOPE_TASK)] = text(redis.call('GET', key))
end
-- Tasks deleted through the API (a tombstone each, for a day).
for _, key in ipairs(redis.call('KEYS', DELETED .. '*')) do
  snapshot.deleted[#snapshot.deleted + 1] = after(key, DELETED)
end
for _, entry in ipairs(redis.call('XRANGE', EVENT_LOG, '-', '+')) do
  local fields = entry[2]
  local outcome, task = '', ''
  for i = 1, #fields, 2 do
    if fields[i] == 'outcome' then outcome = fields[i + 1] elseif fields[i] == 'task' then task = fields[i + 1] end
  end
  snapshot.outcomes[#snapshot.outcomes + 1] = {entry[1], outcome, task}
end
-- The task of each job waiting in a job stream.
local function job_tasks(stream, into)
  for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+')) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'task' then into[#into + 1] = fields[i + 1] end
    end
  end
end
job_tasks(DOWNLOAD_JOBS, snapshot.jobs)
job_tasks(FAILURE_JOBS, snapshot.failure_jobs)
-- cjson writes an empty table as {}; lists stay lists only when they have items, which the checks allow.
return cjson.encode(snapshot)
"""
)


def snapshot(client: redis.Redis) -> dict[str, Any]:
    raw = client.eval(SNAPSHOT, 0)
    # Ids come from outside (events); bytes that are not UTF-8 are replaced the same way everywhere.
    state = json.loads(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
    kept = ("tasks", "indexes", "owner_indexes", "queues", "rotations", "slots", "ds")
    return {name: (value if value != {} or name in kept else []) for name, value in state.items()}


def violations(client: redis.Redis) -> list[str]:
    """Every broken invariant, described; empty when the state is consistent."""
    state = snapshot(client)
    tasks: dict[str, dict[str, str]] = state["tasks"]
    found: list[str] = []
    indexes: dict[str, list[str]] = state["indexes"]
    members_all = set(indexes.get("*") or [])
    for task_id, task in tasks.items():
        status = task["status"]
        if task["id"] != task_id:
            found.append(f"task {task_id}: its hash says id {task['id']!r}")
        if status not in STATUSES:
            found.append(f"task {task_id}: unknown status {status!r}")
        member = f"{task['created_ms']}:{task_id}"
        if member not in members_all:
            found.append(f"task {task_id}: missing from the index of all tasks")
        listed_in = sorted(name for name, members in indexes.items() if name != "*" and member in members)
        if listed_in != [status]:
            found.append(f"task {task_id} ({status}): in the status indexes {listed_in}")
    for name, members in indexes.items():
        for member in members or []:
            task_id = member.split(":", 1)[-1]
            if task_id not in tasks:
                found.append(f"index {name!r}: member {member!r} names no task")
            elif name != "*" and tasks[task_id]["status"] != name:
                found.append(f"index {name!r}: task {task_id} is {tasks[task_id]['status']}")

    # Each submitter's indexes ("<owner>:tasks" and "<owner>:tasks:<status>") hold exactly its tasks.
    expected: dict[str, set[str]] = {}
    for task_id, task in tasks.items():
        member = f"{task['created_ms']}:{task_id}"
        expected.setdefault(f"{task['owner']}:tasks", set()).add(member)
        expected.setdefault(f"{task['owner']}:tasks:{task['status']}", set()).add(member)
    for name in sorted(set(expected) | set(state["owner_indexes"])):
        held = set(state["owner_indexes"].get(name) or [])
        if held != expected.get(name, set()):
            found.append(
                f"owner index {name!r}: missing {sorted(expected.get(name, set()) - held)[:5]}, "
                f"extra {sorted(held - expected.get(name, set()))[:5]}"
            )

    waiting: set[str] = set()
    for queue, ids in state["queues"].items():
        model, _, owner = queue.partition(":")
        for task_id in ids or []:
            task = tasks.get(task_id)
            if task is None or task["status"] != "queued":
                found.append(f"queue {queue!r}: task {task_id} is {task['status'] if task else 'missing'}")
            elif (task["model"], task["owner"]) != (model, owner):
                found.append(f"queue {queue!r}: task {task_id} is of {task['model']}/{task['owner']!r}")
            waiting.add(task_id)
        if ids and owner not in (state["rotations"].get(model) or []):
            found.append(f"queue {queue!r} has tasks but its submitter is not in the rotation: never admitted")
    for model, owners in state["rotations"].items():
        if len(owners or []) != len(set(owners or [])):
            found.append(f"rotation {model!r} names a submitter twice: {owners}")

    holding: set[str] = set()
    for model, ids in state["slots"].items():
        for task_id in ids or []:
            task = tasks.get(task_id)
            if task is None or task["status"] not in ("queued", "submitted"):
                found.append(f"slot of {model}: task {task_id} is {task['status'] if task else 'missing'}")
            holding.add(task_id)
    for task_id in state["sweep"]:
        task = tasks.get(task_id)
        if task is None or task["status"] != "submitted":
            found.append(f"sweeper watch: task {task_id} is {task['status'] if task else 'missing'}")
    for task_id, task in tasks.items():
        if task["status"] == "queued" and task_id not in waiting and task_id not in holding:
            found.append(f"task {task_id} is queued but neither in a queue nor holding a slot: stuck")

    # A deleted task's DashScope id stays mapped (for a day), and the events it had stay in the audit log.
    deleted = set(state["deleted"] or [])
    for ds_id, task_id in state["ds"].items():
        task = tasks.get(task_id)
        if task is None:
            if task_id not in deleted:
                found.append(f"DashScope task {ds_id}: mapped to {task_id!r}, which does not exist")
        elif task["ds_task_id"] != ds_id and not (task["status"] == "canceled" and not task["ds_task_id"]):
            # The one exception: a task canceled while its create was in flight is canceled at DashScope
            # when the answer comes, and keeps the mapping so that the late event is stale, not unknown.
            found.append(
                f"DashScope task {ds_id}: mapped to task {task_id}, whose DashScope id is {task['ds_task_id']!r}"
            )
    for task_id, task in tasks.items():
        if task["ds_task_id"] and state["ds"].get(task["ds_task_id"]) != task_id:
            found.append(f"task {task_id}: DashScope id {task['ds_task_id']} is not mapped back to it")

    outcomes = {outcome.value for outcome in Outcome}
    for entry_id, outcome, task_id in state["outcomes"]:
        if outcome not in outcomes:
            found.append(f"event {entry_id}: unknown outcome {outcome!r}")
        elif outcome in (Outcome.APPLIED, Outcome.STALE) and task_id not in tasks and task_id not in deleted:
            found.append(f"event {entry_id}: {outcome} for task {task_id!r}, which does not exist")

    jobs = set(state["jobs"])
    for task_id, task in tasks.items():
        if task["status"] == "downloading" and task_id not in jobs:
            found.append(f"task {task_id} is downloading without a download job: stuck")
    # A task DashScope reported FAILED waits for the read of its reason: with its job, without its slot or
    # the sweeper's watch (DashScope no longer runs it), and only while it is submitted.
    failure_jobs = set(state["failure_jobs"])
    for task_id, task in tasks.items():
        if not task["awaiting_reason"]:
            continue
        if task["status"] != "submitted":
            found.append(f"task {task_id} is {task['status']} but still marked as awaiting its failure reason")
        elif task_id not in failure_jobs:
            found.append(f"task {task_id} awaits its failure reason without a job: stuck")
        if task_id in holding or task_id in state["sweep"]:
            found.append(f"task {task_id} awaits its failure reason but still holds a slot or the sweeper's watch")
    return found


def assert_consistent(client: redis.Redis) -> None:
    found = violations(client)
    assert not found, "Redis state is inconsistent:\n" + "\n".join(found[:50])
