"""The Lua scripts' files and their loader (service/persistence/scripts.py): what each file declares in its
header against what its code reads, the names .luacheckrc gives luacheck against those the loader gives
Redis, and the batch form of the ingest script against the script itself in a real Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from wanhook.service.persistence import keys, scripts

from ..support import ROOT

LUA = ROOT / "service" / "persistence" / "lua"
FILES = sorted(LUA.glob("*.lua"))


def _code(path: Path) -> str:
    """A file's Lua without its comments (which name ARGV and KEYS in prose)."""
    return re.sub(r"--[^\n]*", "", path.read_text())


def test_the_loader_reads_every_file_of_the_folder() -> None:
    assert len(FILES) > 20
    assert {path.name for path in FILES} == {path.name for path in scripts.LUA.iterdir() if path.name.endswith(".lua")}
    for path in FILES:
        script = scripts.load(path.stem)
        assert script.text.endswith(path.read_text()), path


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_argc_is_the_highest_argv_index_the_file_reads(path: Path) -> None:
    """``--! argc: N`` is the highest ARGV[n] the file reads, ``N+`` when it reads more in a loop (#ARGV);
    a file that declares none reads no ARGV entry by index."""
    script = scripts.load(path.stem)
    code = _code(path)
    highest = max((int(n) for n in re.findall(r"\bARGV\[(\d+)\]", code)), default=0)
    assert highest == (script.argc or 0), (path.name, highest, script.argc)
    assert script.more_args == bool(re.search(r"#ARGV\b(?!\[)", code)), path.name


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_keys_are_the_keys_the_file_reads(path: Path) -> None:
    """``--! keys: N`` is the highest KEYS[n] the file reads (all of them, when it goes through KEYS whole)."""
    script = scripts.load(path.stem)
    code = _code(path)
    highest = max((int(n) for n in re.findall(r"\bKEYS\[(\d+)\]", code)), default=0)
    if script.keys is None:
        # Given keys.ROUTE, which only sends the script to the {wanhook} slot's node: no key of its own.
        assert not re.search(r"\bKEYS\b", code), path.name
    elif "ipairs(KEYS)" in code:
        assert highest <= script.keys, path.name
    else:
        assert highest == script.keys, (path.name, highest, script.keys)


def test_the_key_helpers_give_each_script_the_keys_it_declares() -> None:
    given = {
        "release_submission": scripts.release_submission_keys("t-1"),
        "claim_callbacks": scripts.CALLBACKS_KEYS,
        "defer_callbacks": scripts.CALLBACKS_KEYS,
        "settle_callback": scripts.settle_callback_keys("t-1"),
        "drop_video": scripts.drop_video_keys("t-1"),
        "dead_letter_job": scripts.job_streams_keys(keys.DOWNLOAD_JOBS, keys.DOWNLOAD_DEAD),
        "replay_job": scripts.job_streams_keys(keys.FAILURE_JOBS, keys.FAILURE_DEAD),
    }
    for name, names in given.items():
        assert len(names) == scripts.load(name).keys, name
        # One slot, that of every key (keys.py): the client sends the script there, on a cluster too.
        assert all(key.startswith(keys.PREFIX) for key in names), names


def test_the_loader_refuses_a_header_it_cannot_keep() -> None:
    with pytest.raises(ValueError, match="without common"):
        scripts.build("--! include: ingest_event\n--! derives: a task\nreturn ingest(ARGV)\n")
    with pytest.raises(ValueError, match="not understood"):
        scripts.build("--! argv: 2\n--! keys: 1\nreturn ARGV[2]\n")
    with pytest.raises(ValueError, match="neither"):
        scripts.build("--! argc: 1\nreturn ARGV[1]\n")
    # A piece that derives keys needs keys.py's names, which only a script that says it derives is given.
    with pytest.raises(ValueError, match="does not say it derives"):
        scripts.build("--! include: common\n--! keys: 1\nreturn owner_index(KEYS[1])\n")
    built = scripts.build("--! include: common\n--! argc: 1\n--! derives: ranks\nreturn RANK[ARGV[1]]\n", LIMIT=3)
    # In order: the preamble, the given constants, the piece, the script.
    assert built.text.index("local TASK = ") < built.text.index("local LIMIT = 3") < built.text.index("local RANK")
    assert built.text.index("local RANK") < built.text.index("return RANK[ARGV[1]]")


def _pieces() -> set[str]:
    return {piece for path in FILES for piece in scripts.load(path.stem).includes}


def _declared() -> tuple[set[str], set[str], set[str]]:
    """The scripts (pieces aside) given all their keys, given some and deriving the rest, deriving them all."""
    loaded = [scripts.load(path.stem) for path in FILES if path.stem not in _pieces()]
    return (
        {script.name for script in loaded if script.derives is None},
        {script.name for script in loaded if script.derives is not None and script.keys is not None},
        {script.name for script in loaded if script.derives is not None and script.keys is None},
    )


def test_the_docs_list_the_scripts_by_how_they_get_their_keys() -> None:
    """scripts.py's docstring and the concepts page (docs/concepts.md) say which scripts are given their keys
    and which derive them: both against the files' headers."""
    given, partly, derived = _declared()
    assert len(given) >= 10 and partly and len(derived) >= 10
    doc = scripts.__doc__ or ""

    def named(start: str, end: str) -> set[str]:
        text = doc[doc.index(start) : doc.index(end)]
        return {name.lower() for name in re.findall(r"\b[A-Z][A-Z_]*[A-Z]\b", text)} - {"keys"}

    assert named("Given all their keys in KEYS:", "Given some in KEYS") == given
    assert named("Given some in KEYS", "Deriving their keys inside") == partly
    # Each deriving script is named in the list of what it derives and why (with the partly given ones).
    assert derived | partly <= named("Deriving their keys inside", "They stay correct")
    readme = (ROOT / "docs" / "concepts.md").read_text()
    section = readme[readme.index("**Keys.** Redis asks") :]
    section = section[: section.index("\n\n")]
    all_given = section[section.index("These are:") : section.index("The others")]
    assert set(re.findall(r"`(\w+)`", all_given)) == given
    some = section[section.index("The others") : section.index("The rest")]
    assert set(re.findall(r"`(\w+)`", some)) == partly
    rest = section[section.index("The rest") : section.index("They are correct")]
    assert set(re.findall(r"`(\w+)`", rest)) == derived


def _lua_list(config: str, name: str) -> list[str]:
    [body] = re.findall(r"^local " + name + r" = \{(.*?)\}", config, re.M | re.S)
    return re.findall(r'"(\w+)"', body)


def test_luacheckrc_gives_luacheck_the_names_the_loader_gives_redis() -> None:
    """.luacheckrc cannot import keys.py: its lists of the preamble's names are held to the loader's here, so
    that luacheck sees exactly the names a script is given (a name keys.py drops is an undefined global)."""
    config = (ROOT / ".luacheckrc").read_text()
    assert _lua_list(config, "constants") == re.findall(r"^local (\w+) =", scripts.CONSTANTS, re.M)
    assert _lua_list(config, "key_names") == re.findall(r"^local (\w+) =", scripts.KEY_NAMES, re.M)


def _event_args(n: int, ds_task: str) -> list[str | int]:
    # INGEST's arguments (store.py's ingest), in the order ingest_event.lua reads them.
    body = f'{{"id":"e-{n}"}}'
    return [
        "acs.dashscope",
        f"e-{n}",
        ds_task,
        "SUCCEEDED",
        "2026-12-07T00:00:00.000Z",
        "",
        "",
        "",
        "0",
        keys.EVENT_SEEN_TTL_SECONDS,
        keys.EARLY_EVENT_TTL_SECONDS,
        keys.EVENT_LOG_MAXLEN,
        "",
        body,
        "0" * 64,
        len(body),
        "raw",
    ]


def test_the_batch_answers_and_records_each_event_as_the_script_alone(redis_url: str) -> None:
    """INGEST_BATCH runs ingest_event.lua's function on each event's INGEST_ARGC arguments, as INGEST does on
    its own: the same replies, and the same audit entries and counters."""
    events = [_event_args(1, "ds-1"), _event_args(2, "ds-2"), _event_args(1, "ds-1")]
    assert all(len(args) == scripts.INGEST_ARGC for args in events)
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    def recorded() -> tuple[list[object], dict[str, str]]:
        log = [fields for _, fields in client.xrange(keys.EVENT_LOG)]
        return log, client.hgetall(keys.COUNTERS)

    try:
        alone = [client.eval(scripts.INGEST, 1, *keys.ROUTE, *args) for args in events]
        seen_alone = recorded()
        client.flushall()
        batched = client.eval(scripts.INGEST_BATCH, 1, *keys.ROUTE, *[arg for args in events for arg in args])
        seen_batched = recorded()
    finally:
        client.close()
    assert alone == [["unknown_task", ""], ["unknown_task", ""], ["duplicate", ""]]
    assert batched == alone
    assert seen_batched == seen_alone
    assert seen_alone[1] == {"events_unknown_task": "2", "events_duplicate": "1"}
