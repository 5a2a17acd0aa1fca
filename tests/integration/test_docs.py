"""The documentation against the code, so that neither can change without the other.

The site is built as ``make docs`` builds it (``mkdocs build --strict``) into a temporary folder; every internal
link and anchor of the built pages must resolve; every environment variable the code reads must be on the
generated settings page, and every command and option of the parser on the generated command-line page. The facts
the pages state about the code (the files an event meets, the package picture) are checked on the pages that
state them, and the HTTP API page's examples are run, as shown, against a real ``wanhook serve``.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlsplit

import pytest

from ..conftest import Stack
from ..support import ROOT, Process


def _load_reference() -> ModuleType:
    """docs/_hooks/reference.py, the generator the build runs, loaded by path (it is no package)."""
    spec = importlib.util.spec_from_file_location("wanhook_docs_reference", ROOT / "docs" / "_hooks" / "reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = _load_reference()
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def page(name: str) -> str:
    return (DOCS / name).read_text()


def section(text: str, title: str) -> str:
    """A page's ``## title`` section, up to the next one."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert found, f"no section '## {title}'"
    return found.group(1)


# --- The build -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built in strict mode: a warning (a broken link or anchor, an undescribed setting) fails it."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out


class _Anchors(HTMLParser):
    """The ids of a page, and the links (href) of its ``<a>`` elements."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if tag == "a" and values.get("name"):
            self.ids.add(str(values["name"]))
        if tag == "a" and values.get("href"):
            self.links.append(str(values["href"]))


def parsed(path: Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(path.read_text())
    return parser


def html_pages(site: Path) -> list[Path]:
    return [path for path in sorted(site.rglob("*.html")) if "assets" not in path.relative_to(site).parts]


def test_every_page_is_built(site: Path) -> None:
    for name in sorted(p.relative_to(DOCS) for p in DOCS.rglob("*.md") if "_hooks" not in p.parts):
        built = site / name.with_suffix("") / "index.html" if name.stem != "index" else site / name.with_suffix(".html")
        assert built.is_file(), f"{name} was not built ({built})"


def test_every_internal_link_and_anchor_resolves(site: Path) -> None:
    pages = {path: parsed(path) for path in html_pages(site)}
    broken = []
    for path, found in pages.items():
        for link in found.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            if parts.path.startswith("/"):  # 404.html links from the site's root, wherever it is served
                target = site / unquote(parts.path).lstrip("/")
            else:
                target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(site)}: {link} (no {target})")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parsed(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(site)}: {link} (no anchor #{parts.fragment})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    # The contract's two commands.
    assert "```sh\nmake demo\nmake test\n```" in text
    for link in re.findall(r"\]\(([^)]+)\)", text):
        parts = urlsplit(link)
        if parts.scheme:
            continue
        target = ROOT / parts.path
        assert target.is_file(), f"README.md links to {link}, which is not a file"
        if parts.fragment and target.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-") for heading in headings}
            assert parts.fragment in slugs, f"README.md links to {link}: no such heading"


def test_install_lines_tell_the_truth() -> None:
    """wanhook is on no package index: an install names a checkout or the repository, never the bare name."""
    bare = re.compile(r"pip install (?:-e )?['\"]?wanhook(?:\[[^\]]*\])?['\"]?(?!\S*\s*@)")
    found = []
    for path in [README, *DOCS.rglob("*.md"), *(ROOT / "deploy").rglob("*"), *(ROOT / "service").rglob("*.py")]:
        if path.is_file():
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if bare.search(line) and "finds nothing" not in line:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "install lines naming an index package that does not exist:\n" + "\n".join(found)


# --- Settings ------------------------------------------------------------------------------------------------------


def test_every_variable_the_code_reads_is_on_the_settings_page(site: Path) -> None:
    read = REFERENCE.variables_read()
    _, problems = REFERENCE.settings_markdown()
    assert not problems, "service/config.py, DOCUMENTED:\n" + "\n".join(problems)
    built = (site / "reference" / "settings" / "index.html").read_text()
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>", built, re.S)
    shown = {name for row in rows for name in re.findall(r"<code>([A-Z][A-Z0-9_]+)</code>", row)}
    missing = sorted(set(read) - shown)
    assert not missing, f"not in the first column of the built settings page: {missing}"


def test_the_scan_finds_what_it_must() -> None:
    """The scan itself: each way the code reads a variable today is found."""
    names, prefixes = REFERENCE.read_variables()
    for name in (
        "DASHSCOPE_API_KEY",  # env.get("...") in service/config.py
        "WANHOOK_DOWNLOAD_CONCURRENCY",  # _number(env, "...")
        "WANHOOK_LOG_FORMAT",  # os.environ.get("...") in service/cli/main.py
        "ALIBABA_CLOUD_SECURITY_TOKEN",  # service/cli/eventbridge.py
        "WANHOOK_DEMO_RENDER_SECONDS",
    ):
        assert name in names, name
    assert "WANHOOK_ROCKETMQ_" in prefixes
    assert "WANHOOK_ROCKETMQ_MAX_DELIVERIES" in REFERENCE.families()["WANHOOK_ROCKETMQ_"]
    assert "WANHOOK_ROCKETMQ_MAX_DELIVERIES" in REFERENCE.variables_read()


def test_the_documented_defaults_are_the_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert REFERENCE.code_defaults()["WANHOOK_MAX_VIDEO_BYTES"] == {float(4 << 30)}  # 4 << 30 in the code
    assert not REFERENCE.default_problems()
    # A default changed in the code and not in DOCUMENTED is reported (and fails the strict build).
    real = REFERENCE.code_defaults
    monkeypatch.setattr(REFERENCE, "code_defaults", lambda: {**real(), "WANHOOK_RATE_LIMIT": {50.0}})
    assert any("WANHOOK_RATE_LIMIT" in problem for problem in REFERENCE.default_problems())


def test_a_setting_added_in_code_appears_and_fails_the_strict_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable the code reads with no description is still listed, and reported (which fails --strict)."""
    real = REFERENCE.variables_read
    monkeypatch.setattr(REFERENCE, "variables_read", lambda: {**real(), "WANHOOK_NEW_KNOB": ["service/x.py"]})
    text, problems = REFERENCE.settings_markdown()
    assert "| `WANHOOK_NEW_KNOB` |" in text
    assert any("WANHOOK_NEW_KNOB" in problem for problem in problems)


# --- Command line --------------------------------------------------------------------------------------------------


def _sections(built: str) -> dict[str, str]:
    """The built CLI page's ``h2`` sections, by their heading's text."""
    found: dict[str, str] = {}
    pieces = re.split(r"(<h2 id=\"[^\"]*\">.*?</h2>)", built, flags=re.S)
    for heading, body in zip(pieces[1::2], pieces[2::2], strict=True):
        title = re.sub(r"<[^>]+>", "", heading).replace("&para;", "").replace("¶", "").strip()
        found[title] = body
    return found


def test_every_command_and_option_is_on_the_cli_page(site: Path) -> None:
    sections = _sections((site / "reference" / "cli" / "index.html").read_text())
    expected = dict(REFERENCE.documented_commands())
    problems = []
    for name, command in expected.items():
        if name not in sections:
            problems.append(f"no section for '{name}'")
            continue
        shown = set(re.findall(r"<tr>\s*<td><code>([^<]+)</code></td>", sections[name]))
        problems += [f"{name}: no row for {option}" for option in sorted(REFERENCE.options(command) - shown)]
        # Each option's row names its first option string; aliases (-h) are on that row's line of --help.
        problems += [
            f"{name}: '{option}' is not an option of the command"
            for option in sorted(shown - REFERENCE.options(command))
        ]
    documented = {title for title in sections if title.startswith("wanhook")}
    problems += [f"section '{title}' documents no command" for title in sorted(documented - set(expected))]
    assert not problems, "the built command-line page:\n" + "\n".join(problems)


def test_every_subcommand_has_a_section_with_its_description() -> None:
    text = REFERENCE.cli_markdown()
    for name, command in REFERENCE.documented_commands():
        assert f"## `{name}`\n" in text
        if command.description:
            assert REFERENCE.prose(command.description.split("\n\n")[0]) in text, name


# --- HTTP API ------------------------------------------------------------------------------------------------------


def test_every_operation_is_on_the_http_page(site: Path) -> None:
    from wanhook.service.web.openapi import DOCUMENT

    built = (site / "reference" / "http-api" / "index.html").read_text()
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method in REFERENCE.METHODS:
                assert f"<code>{method.upper()} {path}</code>" in built, (method, path)
                assert f"<code>{operation['operationId']}</code>" in built, operation["operationId"]
    for name in DOCUMENT["components"]["schemas"]:
        assert f'id="schema-{name.lower()}"' in built, name


# --- How an event travels (docs/concepts.md) -----------------------------------------------------------------------


def test_the_package_layout_names_every_module_in_its_layer() -> None:
    """The concepts page's package picture against the tree: each module under the folder (layer) it is drawn in."""
    text = page("concepts.md")
    picture = text[text.index("### Package layout") :]
    picture = picture[picture.index("```\n") + 4 :]
    picture = picture[: picture.index("```")]
    drawn: dict[str, set[str]] = {}
    folder = ""
    for line in picture.splitlines():
        first = line.split()[0] if line.strip() else ""
        indent = len(line) - len(line.lstrip())
        if first.endswith("/") and indent <= 2:  # a folder: the service's own (indented) or one at the top
            folder = ("service/" + first if indent else first).rstrip("/")
            line = line.replace(first, "", 1)  # a folder's modules may follow its name on its line
        elif indent == 2:  # a module of the service itself, between its folders
            drawn.setdefault("service", set()).update(re.findall(r"\b([a-z_]+)\.py\b", line))
            continue
        drawn.setdefault(folder, set()).update(re.findall(r"\b([a-z_]+)\.py\b", line))
    for path in (ROOT / "service").rglob("*.py"):
        if path.stem in ("__init__", "__main__"):
            continue
        layer = path.parent.relative_to(ROOT).as_posix()
        assert path.stem in drawn.get(layer, set()), f"{path.relative_to(ROOT)} is not drawn under {layer}/"
    assert sum(len(names) for names in drawn.values()) == len(
        [p for p in (ROOT / "service").rglob("*.py") if p.stem not in ("__init__", "__main__")]
    )


def test_the_files_an_event_meets_exist_in_the_order_it_meets_them() -> None:
    """ "The files, in the order an event meets them": every path named is a file of the checkout, and a reader
    meets the layers as a task and its event do: the web layer's API, the submission to DashScope, the push and
    the consumers, the ingress that records the event, the download, the callback."""
    text = section(page("concepts.md"), "How an event travels")
    files = text[text.index("### The files, in the order an event meets them") :]
    named = re.findall(r"`((?:service|consumers)/[\w/]+\.py)`", files)
    assert len(named) > 20, named
    missing = [path for path in named if not (ROOT / path).is_file()]
    assert not missing, f"docs/concepts.md names files that are not in the checkout: {missing}"
    first = {path: named.index(path) for path in reversed(named)}
    order = [
        "service/web/api.py",
        "service/domain/validation.py",
        "service/persistence/store.py",
        "service/flows/submission.py",
        "service/outbound/dashscope.py",
        "service/web/push.py",
        "service/ingress/webhook.py",
        "consumers/rocketmq.py",
        "consumers/rocketmq4.py",
        "consumers/delivery.py",
        "service/ingress/receiver.py",
        "service/domain/events.py",
        "service/flows/download.py",
        "service/outbound/storage.py",
        "service/flows/callbacks.py",
    ]
    assert sorted(order, key=lambda path: first.get(path, len(named))) == order, [
        (path, first.get(path)) for path in order
    ]
    # Every module of the ingress is met on the way.
    for path in (ROOT / "service" / "ingress").glob("*.py"):
        if path.stem != "__init__":
            assert f"service/ingress/{path.name}" in named, path
    # The picture's one function: both entries hand the raw body to it.
    assert "receiver.receive()" in text and "wanhook.service.ingress.receiver.receive" in text
    from wanhook.service.ingress import receiver

    assert inspect.iscoroutinefunction(receiver.receive)


# --- The HTTP API page's examples, run ----------------------------------------------------------------------------

EXAMPLE = re.compile(r"^<!-- example -->\n\n```(sh|python)\n(.*?)^```$", re.S | re.M)
API_TOKEN = "docs-example-token"


def examples(language: str) -> list[str]:
    """The marked blocks of the HTTP API page in one language, in the page's order, exactly as shown."""
    return [
        textwrap.dedent(code) for found, code in EXAMPLE.findall(page("reference/http-api.md")) if found == language
    ]


def test_the_examples_cover_every_operation_they_promise() -> None:
    for language in ("sh", "python"):
        script = "\n".join(examples(language))
        assert len(examples(language)) == 6, language
        for fragment in ("/v1/tasks", "/cancel", "/events", "DELETE" if language == "sh" else ".delete("):
            assert fragment in script, (language, fragment)


def test_the_http_examples_run_against_a_real_serve(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    """Each language's blocks, run in order: create, get, list, cancel, follow the events, delete. So that the
    cancel finds the task still queued, one model slot is held by a long task first."""
    stack = Stack(tmp_path, redis_url, processes, "--render-seconds", "120")
    stack.env.update({"WANHOOK_API_TOKENS": API_TOKEN, "WANHOOK_LIMITS": "wan2.2-t2v-plus=1/1"})
    stack.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    stack.start()
    try:
        blocker = stack.create()
        stack.wait_status(blocker["id"], "submitted")
        env = {
            **{key: value for key, value in os.environ.items() if not key.startswith(("WANHOOK_", "DASHSCOPE_"))},
            "WANHOOK_SERVER": stack.url,
            "WANHOOK_API_TOKEN": API_TOKEN,
        }
        runs = {
            "sh": ["bash", "-euo", "pipefail", "-c", "\n".join(examples("sh"))],
            "python": [sys.executable, "-c", "\n".join(examples("python"))],
        }
        for language, argv in runs.items():
            result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, f"{language}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            out = result.stdout
            # The created task was listed as queued, canceled, streamed to its end and deleted.
            task_id = out.split()[0]
            assert task_id != blocker["id"] and out.count(task_id) >= 2, out
            assert stack.http.get(f"/v1/tasks/{task_id}").status_code == 404, out
            if language == "sh":
                assert re.search(r'"status":\s*"canceled"', out) and "event: task.canceled" in out, out
                assert re.search(r'"deleted":\s*true', out), out
            else:
                lines = out.splitlines()
                assert lines[0] == f"{task_id} queued" and "canceled" in lines, out
                assert any(line.startswith(f"{task_id} queued ") for line in lines[2:]), out  # listed
                assert lines[-1].startswith("True "), out
        assert stack.task(blocker["id"])["status"] == "submitted"
    finally:
        stack.http.close()
        stack.redis.close()
