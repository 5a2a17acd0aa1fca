"""The layers hold (their imports: the contract in pyproject.toml, checked by `make lint`): only the web layer
speaks HTTP, every error has its place in ``errors.py``'s tree, and a
task reads from its stored hash into the contract's shape. In process (one check in a fresh interpreter, which
alone shows what an import loads), in a couple of seconds."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import wanhook.service
from wanhook.service.core import errors
from wanhook.service.domain.task import Status, Task
from wanhook.service.web import responses

ROOT = Path(__file__).resolve().parents[2]
WEB_ONLY = ("starlette", "uvicorn")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_the_core_the_ingress_and_the_consumers_load_no_web_framework() -> None:
    """Not even through another module: every module outside web/ and cli/ imported in a fresh interpreter
    leaves starlette and uvicorn unloaded. The import contract (``make lint``) holds the imports written in the
    code; this holds what an import really loads, dynamic imports included."""
    modules = [
        "wanhook." + path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        for folder in ("service", "consumers")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.parent.name not in ("web", "cli") and path.stem != "__main__"
    ]
    assert "wanhook.service.ingress.receiver" in modules and "wanhook.consumers.rocketmq4" in modules
    code = (
        f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def _reads_a_status(node: ast.expr) -> bool:
    """``x["status"]``, ``x.get("status")`` or ``x.status``: a task's status (or a change's)."""
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "status"
    if isinstance(node, ast.Call):
        return (
            isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and bool(node.args)
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "status"
        )
    return isinstance(node, ast.Attribute) and node.attr == "status"


def _status_literals(node: ast.expr) -> list[str]:
    """The statuses ``node`` spells as string literals (a constant, or a tuple, list or set of them)."""
    values = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    return [value.value for value in values if isinstance(value, ast.Constant) and value.value in set(Status)]


def test_statuses_are_compared_and_written_through_status() -> None:
    """A task's status is never compared with, nor written as, a string literal: ``Status`` names them (the Lua
    scripts of service/persistence/lua aside, which cannot import it)."""
    sources = [
        path for folder in ("service", "consumers") for path in (ROOT / folder).rglob("*.py") if path.name != "task.py"
    ]
    found = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_reads_a_status(side) for side in sides):
                    found += [
                        f"{path.relative_to(ROOT)}:{node.lineno}: {s}" for side in sides for s in _status_literals(side)
                    ]
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "status":
                        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {s}" for s in _status_literals(value)]
            elif isinstance(node, ast.keyword) and node.arg == "status":
                found += [f"{path.relative_to(ROOT)}:{node.value.lineno}: {s}" for s in _status_literals(node.value)]
    # The readiness probe's answer ({"status": "ready"}) is the process's state, not a task's.
    readiness = [place for place in found if place.startswith("service/web/app.py:") and place.endswith(": ready")]
    assert len(readiness) == 1, found
    found.remove(readiness[0])
    assert not found, f"statuses spelled as literals instead of Status: {found}"


def _service_errors() -> set[type[errors.WanhookError]]:
    """Every WanhookError class defined in a module of the service or the consumer."""
    found: set[type[errors.WanhookError]] = set()
    for package in (wanhook.service, importlib.import_module("wanhook.consumers")):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):
                continue  # runs the command line
            module = importlib.import_module(info.name)
            found |= {
                value
                for value in vars(module).values()
                if inspect.isclass(value) and issubclass(value, errors.WanhookError) and value.__module__ == info.name
            }
    return found


def _tree() -> dict[str, str | None]:
    """Each class named in ``errors.py``'s drawing, with the class drawn as its parent."""
    parents: dict[str, str | None] = {}
    path: list[str] = []  # the classes above the current line, by depth
    for line in (errors.__doc__ or "").splitlines():
        if line.startswith("WanhookError"):
            name, depth = "WanhookError", 0
        elif "── " in line:
            prefix, _, rest = line.partition("── ")
            name, depth = rest.split()[0], (len(prefix) + 3) // 4  # "├" is depth 1, "│   ├" 2, ...
        else:
            continue
        del path[depth:]
        parents[name] = path[-1] if path else None
        path.append(name)
    return parents


def test_every_error_has_its_place_in_the_drawn_tree() -> None:
    tree = _tree()
    classes = _service_errors()
    assert {cls.__name__ for cls in classes} == set(tree), "errors.py's drawing and the code disagree"
    for cls in classes - {errors.WanhookError}:
        # The tree drawn is the tree built: each class's nearest WanhookError base is its drawn parent.
        parent = next(base for base in cls.__mro__[1:] if issubclass(base, errors.WanhookError))
        assert tree[cls.__name__] == parent.__name__, cls


def test_every_exception_the_service_or_the_consumers_define_is_a_wanhook_error() -> None:
    """No error outside the tree: a class of the service or the consumers that can be raised derives from
    WanhookError (and so is drawn, by the test above)."""
    outside = []
    for package in (wanhook.service, importlib.import_module("wanhook.consumers")):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):
                continue
            outside += [
                f"{info.name}.{name}"
                for name, value in vars(importlib.import_module(info.name)).items()
                if inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not issubclass(value, errors.WanhookError)
            ]
    assert not outside, f"exceptions outside errors.py's tree: {outside}"


def test_every_error_carries_a_code_and_a_message() -> None:
    for cls in _service_errors():
        assert isinstance(cls.code, str) and cls.code, cls
    refused = errors.InvalidField("seed", "must be between 0 and 2147483647")
    assert (refused.code, refused.message, refused.field) == (
        "invalid_field",
        "seed: must be between 0 and 2147483647",
        "seed",
    )
    rejected = errors.RequestRejected("InvalidParameter", "bad size", status_code=400)
    assert str(rejected) == "InvalidParameter: bad size" and rejected.message == "bad size"
    assert not rejected.retryable and errors.Throttled("Throttling", "slow down").retryable
    assert isinstance(errors.ConfigError("x"), ValueError)


@pytest.mark.parametrize(
    ("error", "status", "headers"),
    [
        (errors.InvalidEvent("invalid_json", "the body is not valid JSON"), 400, None),
        (errors.InvalidRequest("the body must be a JSON object"), 422, None),
        (errors.InvalidField("prompt", "is required"), 422, None),
        (errors.IdempotencyKeyReused("t1"), 422, None),
        (errors.InvalidSignature("stale timestamp"), 401, None),
        (errors.TaskNotFound("t1"), 404, None),
        (errors.TaskConflict("too_late", "no"), 409, None),
        (errors.VideoGone("gone"), 410, None),
        (errors.RateLimited(5, 2), 429, {"Retry-After": "2"}),
        (errors.QueueFull(3, 3), 429, {"Retry-After": "60"}),
        (errors.TooManyStreams(True, 4), 429, {"Retry-After": "30"}),
        (errors.TooManyStreams(False, 4), 503, {"Retry-After": "10"}),
        (errors.CertificateUnavailable(), 503, {"Retry-After": "5"}),
        (errors.Unavailable("dashscope_unavailable", "down"), 503, None),
    ],
)
def test_the_web_layer_answers_each_domain_error(
    error: errors.WanhookError, status: int, headers: dict[str, str] | None
) -> None:
    answer = responses.error_response(error)
    assert answer.status_code == status
    assert {
        name: value for name, value in answer.headers.items() if name not in ("content-length", "content-type")
    } == {name.lower(): value for name, value in (headers or {}).items()}
    body = json.loads(answer.body)["error"]
    assert body["code"] == error.code and body["message"] == error.message
    assert body.get("field") == getattr(error, "field", None)


def test_an_error_without_an_answer_is_a_bug() -> None:
    with pytest.raises(LookupError):
        responses.status_of(errors.DashScopeError("InternalError", "boom"))


def test_a_task_reads_from_its_hash_into_the_contract_shape() -> None:
    stored = {
        b"id": b"t1",
        b"status": b"downloading",
        b"owner": b"abc",
        b"model": b"wan2.2-t2v-plus",
        b"prompt": "a caf\u00e9".encode(),
        b"negative_prompt": b"",
        b"parameters": b'{"size":"1280*720"}',
        b"callback": b'{"url":"https://example.com/h","events":["task.ready"]}',
        b"error": b"",
        b"ds_task_id": b"ds1",
        b"created_at": b"2025-01-01T00:00:00.000Z",
        b"dl_bytes": b"10",
        b"dl_total": b"40",
        b"video_url": b"https://videos.example/v.mp4?signed",
    }
    task = Task.from_hash(stored)
    assert Task.from_hash({k.decode(): v.decode() for k, v in stored.items()}) == task
    assert task.status is Status.DOWNLOADING and task.owner == "abc"
    assert task.internal == {"video_url": "https://videos.example/v.mp4?signed"}
    assert task.public() == {
        "id": "t1",
        "status": "downloading",
        "model": "wan2.2-t2v-plus",
        "prompt": "a caf\u00e9",
        "negative_prompt": "",
        "parameters": {"size": "1280*720"},
        "metadata": {},
        "callback": {"url": "https://example.com/h", "events": ["task.ready"]},
        "dashscope": {"task_id": "ds1", "status": None, "request_id": None},
        "video": None,
        "error": None,
        "created_at": "2025-01-01T00:00:00.000Z",
        "updated_at": None,
        "progress": {"bytes": 10, "total": 40},
    }
    # Internal fields (the owner, the signed URL) never reach the contract's shape.
    assert "abc" not in json.dumps(task.public()) and "signed" not in json.dumps(task.public())
