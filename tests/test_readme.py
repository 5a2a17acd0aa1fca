"""The README against the code, so that neither can change without the other: every command's options
(from the parser) in "Command line", every environment variable the code reads in "Configuration"."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
from collections.abc import Iterator

from wanhook.consumers import rocketmq4
from wanhook.consumers.rocketmq import ConsumerSettings
from wanhook.service.cli.main import parser

from .support import ROOT

README = ROOT / "README.md"
SOURCES = ("service", "consumers", "emulator")
# How an environment variable's name looks; a name passed to startswith/removeprefix ending in "_" is a
# prefix whose variables are read in bulk (the family table below says which).
NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
PREFIX = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_")
# The namespaces of wanhook's own settings and of the platforms it uses: a string that is exactly such
# a name is taken as a variable read, however the code reaches the environment with it (a loop over
# names, a helper of its own).
NAMESPACES = ("WANHOOK_", "DASHSCOPE_", "ALIBABA_CLOUD_")
# Variables read by prefix, and where their names are listed.
FAMILIES = {
    "WANHOOK_ROCKETMQ_": [f"WANHOOK_ROCKETMQ_{field.name.upper()}" for field in dataclasses.fields(ConsumerSettings)]
    + [f"WANHOOK_ROCKETMQ_{name.upper()}" for name in rocketmq4.SETTINGS],
}


def section(title: str) -> str:
    """The README's ``## title`` section, up to the next one."""
    text = README.read_text()
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert found, f"README.md has no section '## {title}'"
    return found.group(1)


# --- Command line -------------------------------------------------------------------------------------------------


def commands(
    command: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser, the root's and each (nested) subcommand's, with its path of command names."""
    yield path, command
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def options(command: argparse.ArgumentParser) -> set[str]:
    """The option strings of a command, and its positional arguments as the README writes them (PROMPT)."""
    found: set[str] = set()
    for action in command._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        found.update(action.option_strings or [(action.metavar or action.dest).upper()])
    return found


def only_groups(command: argparse.ArgumentParser) -> bool:
    """A command that only groups others (``wanhook eventbridge``): its subcommands are documented."""
    return not options(command) and any(isinstance(action, argparse._SubParsersAction) for action in command._actions)


def documented_commands() -> dict[str, set[str]]:
    """``### `wanhook ...` `` subsections of "Command line": the options in the first column of their table."""
    text = section("Command line")
    documented: dict[str, set[str]] = {}
    for found in re.finditer(r"^### `(wanhook[^`]*)`\n(.*?)(?=^### |\Z)", text, re.S | re.M):
        rows = [line for line in found.group(2).splitlines() if line.startswith("| `")]
        documented[found.group(1)] = {re.match(r"\| `([^`]+)`", row).group(1) for row in rows}  # type: ignore[union-attr]
    return documented


def test_every_command_and_option_is_in_the_readme() -> None:
    documented = documented_commands()
    problems = []
    expected = {}
    for path, command in commands(parser()):
        if path and only_groups(command):
            continue
        expected[" ".join(("wanhook", *path))] = (command, options(command))
    for name, (command, wanted) in expected.items():
        if name not in documented:
            problems.append(f"no subsection '### `{name}`'")
            continue
        for option in sorted(wanted - documented[name]):
            action = next(
                action
                for action in command._actions
                if option in action.option_strings or (action.metavar or action.dest).upper() == option
            )
            default = "" if action.default in (None, False, argparse.SUPPRESS) else f"`{action.default}`"
            help_text = (action.help or "") % {"default": action.default, "prog": command.prog}
            problems.append(f"{name}: missing row | `{option}` | {default} | {help_text} |")
        problems.extend(
            f"{name}: '{option}' is not an option of the command" for option in sorted(documented[name] - wanted)
        )
    problems.extend(f"'### `{name}`' documents no command" for name in sorted(set(documented) - set(expected)))
    assert not problems, "README.md, section Command line:\n" + "\n".join(problems)


# --- Configuration ------------------------------------------------------------------------------------------------


def _environ(node: ast.AST) -> bool:
    """``os.environ``, ``environ``, or a mapping named ``env`` (as Settings.from_env takes it)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id in {"environ", "env"}
    )


def _name(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def read_variables() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The environment variables ``service/``, ``consumers/`` and ``emulator/`` read, each with the files
    that read it; and the prefixes read in bulk."""
    names: dict[str, set[str]] = {}
    prefixes: dict[str, set[str]] = {}
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), where)):
                found: list[str | None] = []
                if isinstance(node, ast.Call):
                    function = node.func
                    if (
                        isinstance(function, ast.Attribute)
                        and function.attr in {"get", "pop", "setdefault"}
                        and _environ(function.value)
                        and node.args
                    ):
                        found.append(_name(node.args[0]))  # os.environ.get("X"), env.get("X")
                    elif isinstance(function, ast.Attribute) and function.attr == "getenv" and node.args:
                        found.append(_name(node.args[0]))  # os.getenv("X")
                    elif len(node.args) >= 2 and _environ(node.args[0]):
                        found.append(_name(node.args[1]))  # _number(env, "X", ...) and its kind
                    elif isinstance(function, ast.Attribute) and function.attr in {"startswith", "removeprefix"}:
                        prefix = _name(node.args[0]) if node.args else None
                        if prefix and PREFIX.fullmatch(prefix):
                            prefixes.setdefault(prefix, set()).add(where)
                elif isinstance(node, ast.Subscript) and _environ(node.value) and isinstance(node.ctx, ast.Load):
                    found.append(_name(node.slice))  # os.environ["X"]
                elif isinstance(node, ast.Compare) and any(_environ(side) for side in node.comparators):
                    found.append(_name(node.left))  # "X" in os.environ
                elif (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and NAME.fullmatch(node.value)
                    and node.value.startswith(NAMESPACES)
                ):
                    found.append(node.value)
                for name in found:
                    if name and NAME.fullmatch(name):
                        names.setdefault(name, set()).add(where)
    return names, prefixes


def documented_variables() -> set[str]:
    """The variables named in the first column of the Configuration table."""
    text = section("Configuration")
    cells = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `")]
    return {name for cell in cells for name in re.findall(r"`([^`]+)`", cell) if NAME.fullmatch(name)}


def test_every_variable_the_code_reads_is_in_the_readme() -> None:
    names, prefixes = read_variables()
    unknown = sorted(set(prefixes) - set(FAMILIES))
    assert not unknown, (
        f"variables read by prefix {unknown} ({prefixes}): list their names in FAMILIES in "
        "tests/test_readme.py, where they are read from"
    )
    read = {name: sorted(files) for name, files in names.items()}
    for prefix, family in FAMILIES.items():
        if prefix in prefixes:
            read.update({name: sorted(prefixes[prefix]) for name in family})
    read = {name: files for name, files in read.items() if name not in FAMILIES}
    documented = documented_variables()
    missing = [f"{name} (read in {', '.join(files)})" for name, files in sorted(read.items()) if name not in documented]
    stale = sorted(documented - set(read))
    assert not missing and not stale, (
        "README.md, the Configuration table:\n"
        + "".join(f"  missing: {entry}\n" for entry in missing)
        + "".join(f"  no code reads: {name}\n" for name in stale)
    )


def test_the_scan_finds_what_it_must() -> None:
    """The scan itself: each way the code reads a variable today is found."""
    names, prefixes = read_variables()
    for name in (
        "DASHSCOPE_API_KEY",  # env.get("...") in service/config.py
        "WANHOOK_DOWNLOAD_CONCURRENCY",  # _number(env, "...")
        "WANHOOK_LOG_FORMAT",  # os.environ.get("...") in service/cli/main.py
        "ALIBABA_CLOUD_SECURITY_TOKEN",  # service/cli/eventbridge.py
        "WANHOOK_DEMO_RENDER_SECONDS",
    ):
        assert name in names, name
    assert "WANHOOK_ROCKETMQ_" in prefixes
    assert "WANHOOK_ROCKETMQ_MAX_DELIVERIES" in FAMILIES["WANHOOK_ROCKETMQ_"]


def test_the_package_layout_names_every_module_in_its_layer() -> None:
    """README's package picture against the tree: each module under the folder (layer) it is drawn in."""
    text = README.read_text()
    picture = text[text.index("### Package layout") :]
    picture = picture[picture.index("```\n") + 4 :]
    picture = picture[: picture.index("```")]
    drawn: dict[str, set[str]] = {}
    folder = ""
    for line in picture.splitlines():
        first = line.split()[0] if line.strip() else ""
        if first.endswith("/") and not first.startswith("static"):
            folder = ("service/" + first if line.startswith("  ") else first).rstrip("/")
            continue
        drawn.setdefault(folder, set()).update(re.findall(r"\b([a-z_]+)\.py\b", line))
    for top in ("service", "consumers"):
        for path in (ROOT / top).rglob("*.py"):
            if path.stem in ("__init__", "__main__"):
                continue
            layer = path.parent.relative_to(ROOT).as_posix()
            if top == "consumers":
                continue  # drawn as a whole
            assert path.stem in drawn.get(layer, set()), f"{path.relative_to(ROOT)} is not drawn under {layer}/"
    assert sum(len(names) for names in drawn.values()) == len(
        [p for p in (ROOT / "service").rglob("*.py") if p.stem not in ("__init__", "__main__")]
    )


# --- How an event travels -----------------------------------------------------------------------------------------


def test_the_files_an_event_meets_exist_in_the_order_it_meets_them() -> None:
    """ "The files, in the order an event meets them": every path named is a file of the checkout, and a reader
    meets the layers as a task and its event do: the web layer's API, the submission to DashScope, the push and
    the consumers, the ingress that records the event, the download, the callback."""
    text = section("How an event travels")
    files = text[text.index("### The files, in the order an event meets them") :]
    named = re.findall(r"`((?:service|consumers)/[\w/]+\.py)`", files)
    assert len(named) > 20, named
    missing = [path for path in named if not (ROOT / path).is_file()]
    assert not missing, f"README names files that are not in the checkout: {missing}"
    first = {path: named.index(path) for path in reversed(named)}
    order = [
        "service/web/api.py",
        "service/validation.py",
        "service/store.py",
        "service/submission.py",
        "service/dashscope.py",
        "service/web/push.py",
        "service/ingress/webhook.py",
        "consumers/rocketmq.py",
        "consumers/rocketmq4.py",
        "consumers/delivery.py",
        "service/ingress/receiver.py",
        "service/ingress/events.py",
        "service/download.py",
        "service/storage.py",
        "service/callbacks.py",
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
