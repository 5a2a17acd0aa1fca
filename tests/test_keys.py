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

from wanhook.service import keys, scripts

ROOT = Path(__file__).resolve().parent.parent
# The code that ships or drives the service; the tests are observers and may spell a key to check it.
CODE = ("service", "consumers", "emulator", "bench")
KEYS_PY = ROOT / "service" / "keys.py"


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
    """Every piece of Lua: all the literals of scripts.py, any literal elsewhere that calls Redis from Lua,
    and the .lua files."""
    folders = [ROOT / folder for folder in (*CODE, "tests")]
    for path in sorted(path for folder in folders for path in folder.rglob("*.py")):
        for literal in _strings(path):
            if path.name == "scripts.py" or "redis.call(" in literal:
                yield str(path.relative_to(ROOT)), literal
    for path in sorted(path for folder in folders for path in folder.rglob("*.lua")):
        yield str(path.relative_to(ROOT)), path.read_text()


def test_no_key_name_is_spelled_in_lua() -> None:
    texts = _key_texts()
    assert {keys.PREFIX, ":task:", ":owner:", ":counters", ":wake", ":route"} <= texts, texts
    found = [(where, text) for where, source in _lua_sources() for text in texts if _spells(source, text)]
    assert not found, f"key names spelled in Lua instead of taken from keys.py (scripts.KEY_NAMES): {found}"
    # The check reads the scripts themselves: the pieces of scripts.py and the Lua of the tests' snapshot.
    where = {where for where, _ in _lua_sources()}
    assert {"service/scripts.py", "tests/invariants.py"} <= where, where


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
        assert places == ["service/keys.py"], f"{text!r} is spelled in {places}; name it through keys.py"


def test_every_script_that_names_keys_receives_them() -> None:
    names = re.compile(r"\b(?:" + "|".join(re.findall(r"^local (\w+) =", scripts.KEY_NAMES, re.M)) + r")\b")
    used = 0
    for name, value in vars(scripts).items():
        # CREATES_IN_FLIGHT is a piece of scripts, only ever put after COMMON.
        if (
            name.isupper()
            and isinstance(value, str)
            and name not in ("KEY_NAMES", "CREATES_IN_FLIGHT")
            and names.search(value.removeprefix(scripts.KEY_NAMES))
        ):
            used += 1
            assert value.startswith(scripts.KEY_NAMES), f"scripts.{name} uses key names it is not given"
    assert used >= 10


def test_the_scripts_build_keys_as_keys_py_does(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        built = client.eval(
            scripts.COMMON
            + """
return {owner_index('ab12'), owner_index('ab12', 'queued'), owner_index(''), queue_of('wan2.2-t2v-plus', 'ab12')}
""",
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
        *(ROOT / "service").glob("*/**/*.py"),
        *(ROOT / "consumers").rglob("*.py"),
        *(ROOT / "service" / name for name in ("download.py", "sweeper.py", "failures.py")),
    ]
    assert len(outer) > 15
    found = [(str(path.relative_to(ROOT)), use) for path in outer for use in uses.findall(path.read_text())]
    assert not found, found
