"""One source for every Redis key: keys.py spells each name once, and the Lua scripts receive them from it.

The first two tests read the sources only (no Redis); the last runs the scripts' key helpers in a real
Redis against their Python twins in keys.py.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import redis

from wanhook.service.persistence import keys, scripts

ROOT = Path(__file__).resolve().parents[2]
# The code that ships or drives the service; the tests are observers and may spell a key to check it.
CODE = ("service", "consumers", "emulator", "bench")
KEYS_PY = ROOT / "service" / "persistence" / "keys.py"
LUA = ROOT / "service" / "persistence" / "lua"


def _strings(path: Path) -> Iterator[str]:
    """Every string literal of a Python file, docstrings left out (they may name a key in prose)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def _key_texts() -> set[str]:
    """The text of every name keys.py defines: the literals its top-level names are built from (the
    bare ':' that joins parts names nothing)."""
    texts: set[str] = set()
    for node in ast.parse(KEYS_PY.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(getattr(keys, node.targets[0].id, None), str | list):
            texts.update(
                part.value
                for part in ast.walk(node.value)
                if isinstance(part, ast.Constant) and isinstance(part.value, str) and len(part.value) > 1
            )
    return texts


def _spells(literal: str, text: str) -> bool:
    # ':sweep' is not spelled by ':sweeper', nor ':wake' by ':callbacks:wake'; ':tasks' is by ':tasks:'.
    return (
        re.search(r"(?<![\w-])" + re.escape(text) + (r"(?![\w-])" if text[-1].isalnum() else ""), literal) is not None
    )


def _lua_sources() -> Iterator[tuple[str, str]]:
    """Every piece of Lua: the .lua files (the service's scripts, with their comments) and any literal of a
    Python file that calls Redis from Lua."""
    folders = [ROOT / folder for folder in (*CODE, "tests")]
    for path in sorted(path for folder in folders for path in folder.rglob("*.py")):
        for literal in _strings(path):
            if "redis.call(" in literal:
                yield str(path.relative_to(ROOT)), literal
    for path in sorted(path for folder in folders for path in folder.rglob("*.lua")):
        yield str(path.relative_to(ROOT)), path.read_text()


def test_no_key_name_is_spelled_in_lua() -> None:
    texts = _key_texts()
    assert {keys.PREFIX, ":task:", ":owner:", ":counters", ":wake", ":route"} <= texts, texts
    found = [(where, text) for where, source in _lua_sources() for text in texts if _spells(source, text)]
    assert not found, f"key names spelled in Lua instead of taken from keys.py (scripts.KEY_NAMES): {found}"
    # The check reads the scripts themselves: every file of lua/ and the Lua of the tests' snapshot.
    where = {where for where, _ in _lua_sources()}
    files = {f"service/persistence/lua/{path.name}" for path in LUA.glob("*.lua")}
    assert len(files) > 20 and files | {"tests/invariants.py"} <= where, where


def test_each_key_name_is_spelled_once_in_the_code() -> None:
    literals = [
        (path, literal)
        for folder in CODE
        for path in sorted((ROOT / folder).rglob("*.py"))
        for literal in _strings(path)
    ]
    assert len(literals) > 1000  # the walk reached the code
    for text in sorted(_key_texts()):
        places = [str(path.relative_to(ROOT)) for path, literal in literals if _spells(literal, text)]
        assert places == ["service/persistence/keys.py"], f"{text!r} is spelled in {places}; name it through keys.py"


def _code(source: str) -> str:
    """Lua without its comments (which name keys.py's names in prose)."""
    return re.sub(r"--[^\n]*", "", source)


def test_a_script_that_derives_no_key_names_none() -> None:
    """A script that does not say it derives keys (``--! derives: ...``) is not given keys.py's names: any it
    spells is a local it binds to one of its KEYS (SETTLE_CALLBACK's COUNTERS = KEYS[5]), never a key found
    by name."""
    names = set(re.findall(r"^local (\w+) =", scripts.KEY_NAMES, re.M))
    assert {"TASK", "COUNTERS", "CALLBACKS_DUE"} <= names
    given = [path for path in sorted(LUA.glob("*.lua")) if scripts.load(path.stem).derives is None]
    assert len(given) >= 10, given
    for path in given:
        code = _code(path.read_text())
        bound = {
            name
            for line in re.findall(r"^local ([\w, ]+) = KEYS\[", code, re.M)
            for name in re.split(r",\s*", line.strip())
        }
        used = set(re.findall(r"\b[A-Z][A-Z0-9_]*\b", code)) & names
        assert used <= bound, f"lua/{path.name} names keys it is not given: {sorted(used - bound)}"
        assert not names & set(re.findall(r"^local (\w+) =", scripts.load(path.stem).text, re.M)) - bound, path


def test_a_script_that_derives_keys_is_given_every_name() -> None:
    """The others are given every name of keys.py, in their preamble."""
    derived = [path for path in sorted(LUA.glob("*.lua")) if scripts.load(path.stem).derives is not None]
    assert len(derived) >= 10, derived
    for path in derived:
        assert scripts.load(path.stem).text.startswith(scripts.CONSTANTS + scripts.KEY_NAMES), path


def test_the_scripts_build_keys_as_keys_py_does(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        built = client.eval(
            scripts.build(
                """--! include: common
--! derives: the names it returns
return {owner_index('ab12'), owner_index('ab12', 'queued'), owner_index(''), queue_of('wan2.2-t2v-plus', 'ab12')}
"""
            ).text,
            1,
            *keys.ROUTE,
        )
    finally:
        client.close()
    assert built == [
        keys.owner_tasks("ab12"),
        keys.owner_tasks("ab12", "queued"),
        keys.owner_tasks(""),
        keys.QUEUE + "wan2.2-t2v-plus:ab12",
    ]


def test_only_the_redis_layer_names_keys() -> None:
    """The web layer, the ingress, the command line, the consumers and the workers that read or write a
    task reach Redis through the store (or the core module that owns the concern), never by a key name."""
    names = [name for name, value in vars(keys).items() if isinstance(value, str) and value.startswith(keys.PREFIX)]
    # A readiness probe's PING names no key.
    uses = re.compile(r"\bkeys\.(?:" + "|".join(names) + r")\b|\.redis\.(?!ping\()\w+\(")
    outer = [
        *(path for folder in ("web", "ingress", "cli") for path in (ROOT / "service" / folder).rglob("*.py")),
        *(ROOT / "consumers").rglob("*.py"),
        *(ROOT / "service" / "flows" / name for name in ("download.py", "sweeper.py", "failures.py")),
    ]
    assert len(outer) > 15
    found = [(str(path.relative_to(ROOT)), use) for path in outer for use in uses.findall(path.read_text())]
    assert not found, found
