"""The reference pages, generated from the code each time the site is built (an MkDocs hook, named in mkdocs.yml).

A page asks for a generated part with a marker line of its own:

- ``<!-- reference: settings -->``: every environment variable the code reads, from ``DOCUMENTED`` in
  ``service/config.py`` (its default and meaning) and a scan of the sources (which variables are read at all);
- ``<!-- reference: cli -->``: every command and option of the ``wanhook`` command line, from its argparse parser;
- ``<!-- reference: http -->``: every operation and schema of the OpenAPI document the server answers at
  ``GET /openapi.json``.

A variable the code reads with no row in ``DOCUMENTED`` still appears (with no description), and a row naming a
variable nothing reads is kept; both are logged as warnings, which ``mkdocs build --strict`` (``make docs``) turns
into a failed build. ``tests/integration/test_docs.py`` loads this file too, for the same scan.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("service", "consumers", "emulator")
MARKER = re.compile(r"^<!-- reference: (\w+) -->$", re.M)
log = logging.getLogger("mkdocs.hooks.reference")

# --- Settings ------------------------------------------------------------------------------------------------------

# How an environment variable's name looks; a name passed to startswith/removeprefix ending in "_" is a prefix whose
# variables are read in bulk (FAMILIES says which).
NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
PREFIX = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_")
# The namespaces of wanhook's own settings and of the platforms it uses: a string that is exactly such a name is
# taken as a variable read, however the code reaches the environment with it (a loop over names, a helper of its own).
NAMESPACES = ("WANHOOK_", "DASHSCOPE_", "ALIBABA_CLOUD_")


def families() -> dict[str, list[str]]:
    """Variables read by prefix, and their names, from where the code lists them."""
    from wanhook.consumers import rocketmq4
    from wanhook.consumers.rocketmq import ConsumerSettings

    return {
        "WANHOOK_ROCKETMQ_": [
            f"WANHOOK_ROCKETMQ_{field.name.upper()}" for field in dataclasses.fields(ConsumerSettings)
        ]
        + [f"WANHOOK_ROCKETMQ_{name.upper()}" for name in rocketmq4.SETTINGS],
    }


def _environ(node: ast.AST) -> bool:
    """``os.environ``, ``environ``, or a mapping named ``env`` (as Settings.from_env takes it)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id in {"environ", "env"}
    )


def _name(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def read_variables() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The environment variables ``service/``, ``consumers/`` and ``emulator/`` read, each with the files that read
    it; and the prefixes read in bulk."""
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


def variables_read() -> dict[str, list[str]]:
    """Every variable the code reads (the families' members included, their prefixes not), with its files.
    Raises ``LookupError`` for a prefix read in bulk that FAMILIES does not know."""
    names, prefixes = read_variables()
    known = families()
    unknown = sorted(set(prefixes) - set(known))
    if unknown:
        raise LookupError(
            f"variables read by prefix {unknown} ({prefixes}): list their names in families() of "
            "docs/_hooks/reference.py, from where the code lists them"
        )
    read = {name: sorted(files) for name, files in names.items()}
    for prefix, family in known.items():
        if prefix in prefixes:
            read.update({name: sorted(prefixes[prefix]) for name in family})
    return {name: files for name, files in sorted(read.items()) if name not in known}


_ARITHMETIC = (ast.Expression, ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop)


def code_defaults() -> dict[str, set[float]]:
    """The numeric defaults the code gives where it reads a variable with one of config.py's helpers
    (``_count(env, "WANHOOK_X", 4 << 30)``), by variable: what the settings table's default must say."""
    found: dict[str, set[float]] = {}
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and len(node.args) >= 3 and _environ(node.args[0])):
                    continue
                name, default = _name(node.args[1]), node.args[2]
                if name and all(isinstance(part, _ARITHMETIC) for part in ast.walk(default)):
                    value = eval(compile(ast.Expression(default), str(path), "eval"))  # constants and operators only
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        found.setdefault(name, set()).add(float(value))
    return found


def default_problems() -> list[str]:
    """Rows whose default disagrees with the code's: each name's value, first in backticks, in the names' order."""
    from wanhook.service.config import DOCUMENTED

    defaults = code_defaults()
    problems = []
    for row in DOCUMENTED:
        shown = re.findall(r"`([^`]+)`", row.default)
        for index, name in enumerate(row.names):
            if name not in defaults:
                continue
            try:
                agrees = len(shown) == len(row.names) and float(shown[index]) in defaults[name]
            except ValueError:
                agrees = False
            if not agrees:
                wanted = " or ".join(f"{value:g}" for value in sorted(defaults[name]))
                problems.append(
                    f"DOCUMENTED (service/config.py) gives {name} the default {row.default!r}; the code: {wanted}"
                )
    return problems


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# In the plain text of help and descriptions: option strings and variable names, shown as code.
_CODE = re.compile(r"(?<![\w`-])(--[a-z][a-z0-9-]*|\$?(?:WANHOOK|DASHSCOPE|ALIBABA_CLOUD)_[A-Z0-9_]*\*?(?:=[\w.-]+)?)")


def prose(text: str) -> str:
    """Plain text (``--help``'s, the OpenAPI document's) as Markdown: options and variables as code, and the
    characters Markdown would take for markup (``W*H``, ``<kind>``) as themselves. Spans already in backticks
    are kept as they are."""
    pieces = re.split(r"(`[^`]*`)", text)
    for index in range(0, len(pieces), 2):
        piece = pieces[index].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts = _CODE.split(piece)
        for inner in range(0, len(parts), 2):
            parts[inner] = parts[inner].replace("*", "\\*").replace("_", "\\_").replace("[", "\\[")
        for inner in range(1, len(parts), 2):
            parts[inner] = f"`{parts[inner]}`"
        pieces[index] = "".join(parts)
    return "".join(pieces)


def sentence(text: str) -> str:
    """A one-line help (``submit a task``) as a sentence."""
    text = text.strip()
    return (text[:1].upper() + text[1:] + ("" if text.endswith((".", ")")) else ".")) if text else text


def settings_markdown() -> tuple[str, list[str]]:
    """The settings table, and what is wrong with the documentation (a variable read but not described, a row
    naming a variable nothing reads)."""
    from wanhook.service.config import DOCUMENTED

    read = variables_read()
    documented = {name for row in DOCUMENTED for name in row.names}
    problems = [
        f"{name} (read in {', '.join(files)}) has no row in DOCUMENTED (service/config.py)"
        for name, files in read.items()
        if name not in documented
    ]
    problems += [
        f"DOCUMENTED (service/config.py) names {name}, which no code reads" for name in sorted(documented - set(read))
    ]
    problems += default_problems()
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for row in DOCUMENTED:
        names = ", ".join(f"`{name}`" for name in row.names)
        lines.append(f"| {names} | {_cell(row.default)} | {_cell(row.meaning)} |")
    for name, files in read.items():
        if name not in documented:
            lines.append(f"| `{name}` | | not described yet (read in {', '.join(f'`{f}`' for f in files)}) |")
    return "\n".join(lines) + "\n", problems


# --- Command line --------------------------------------------------------------------------------------------------


def commands(
    command: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser, the root's and each (nested) subcommand's, with its path of command names."""
    yield path, command
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def arguments(command: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in command._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def label(action: argparse.Action) -> str:
    """How the page names an argument: its first option string, or a positional's metavar (PROMPT)."""
    return action.option_strings[0] if action.option_strings else str(action.metavar or action.dest).upper()


def options(command: argparse.ArgumentParser) -> set[str]:
    """Every option string of a command, and its positional arguments as the page writes them (PROMPT)."""
    found: set[str] = set()
    for action in arguments(command):
        found.update(action.option_strings or [label(action)])
    return found


def only_groups(command: argparse.ArgumentParser) -> bool:
    """A command that only groups others (``wanhook eventbridge``): its subcommands are documented instead."""
    return not options(command) and any(isinstance(action, argparse._SubParsersAction) for action in command._actions)


def documented_commands() -> list[tuple[str, argparse.ArgumentParser]]:
    """The commands the CLI page has a section for, by full name (``wanhook dead-letters list``)."""
    from wanhook.service.cli.main import parser

    return [
        (" ".join(("wanhook", *path)), command)
        for path, command in commands(parser())
        if not (path and only_groups(command))
    ]


def _summaries(root: argparse.ArgumentParser) -> dict[str, str]:
    """Each subcommand's one-line help, as ``wanhook --help`` lists it, by full name."""
    found: dict[str, str] = {}
    for path, command in commands(root):
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    found[" ".join(("wanhook", *path, choice.dest))] = choice.help or ""
    return found


def _default(action: argparse.Action) -> str:
    if not action.option_strings:
        if action.nargs in ("?", "*"):
            return f"`{action.default}`" if action.default not in (None, argparse.SUPPRESS) else "optional"
        return "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off"
    if isinstance(action, argparse._VersionAction) or action.default in (None, argparse.SUPPRESS):
        return ""
    if "(default: " in (action.help or "") and "%(default)s" not in (action.help or ""):
        return ""  # the help says it in words (an environment variable's value, say), the column would not
    return f"`{action.default}`"


def _help(action: argparse.Action, prog: str) -> str:
    """The option's help as ``--help`` prints it, less the default the table shows in its own column."""
    text = action.help or ""
    if isinstance(action, argparse._VersionAction):
        text = text or "print the installed version and exit"
        if text == "show program's version number and exit":
            text = "print the installed version and exit"
    text = text.replace(" (default: %(default)s)", "").replace("(default: %(default)s; ", "(")
    text = text.replace("(default: %(default)s)", "")
    params = {**vars(action), "prog": prog, "default": action.default}
    if action.choices is not None:
        params["choices"] = ", ".join(map(str, action.choices))
    text = text % params
    if action.choices is not None and not any(str(choice) in text for choice in action.choices):
        text += f" (one of {', '.join(f'`{choice}`' for choice in action.choices)})"
    return text


def cli_markdown() -> str:
    from wanhook.service.cli.main import parser

    summaries = _summaries(parser())
    parts: list[str] = []
    for name, command in documented_commands():
        parts.append(f"## `{name}`\n")
        about = command.description or sentence(summaries.get(name, ""))
        if about:
            parts.append("\n\n".join(prose(paragraph.strip()) for paragraph in about.split("\n\n")) + "\n")
        rows = arguments(command)
        if not rows:
            parts.append("No options.\n")
            continue
        lines = ["| option | default | meaning |", "|---|---|---|"]
        for action in rows:
            lines.append(f"| `{label(action)}` | {_default(action)} | {_cell(prose(_help(action, command.prog)))} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


# --- HTTP API ------------------------------------------------------------------------------------------------------

METHODS = ("get", "head", "post", "put", "patch", "delete")


def _schema(schema: dict[str, Any]) -> str:
    """A schema in a few words: a reference by its name (linked below), else its type."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#schema-{name.lower()})"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_schema(schema.get('items', {}))}"
    if "enum" in schema:
        kind += " (" + ", ".join(f"`{value}`" for value in schema["enum"]) + ")"
    if schema.get("format"):
        kind += f", {schema['format']}"
    if schema.get("nullable"):
        kind += ", or null"
    return kind


def http_markdown() -> str:
    from wanhook.service.web.openapi import DOCUMENT

    parts = [
        "## Operations\n",
        f"From the OpenAPI {DOCUMENT['openapi']} document the server answers at `GET /openapi.json`.\n",
    ]
    for path, item in DOCUMENT["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            parts.append(f"### `{method.upper()} {path}`\n")
            parts.append(f"**{prose(operation.get('summary', ''))}** (`{operation['operationId']}`)\n")
            if operation.get("description"):
                parts.append(prose(operation["description"].strip()) + "\n")
            parameters = operation.get("parameters", []) + item.get("parameters", [])
            if parameters:
                lines = ["| parameter | in | type | required | meaning |", "|---|---|---|---|---|"]
                for parameter in parameters:
                    kind = _cell(_schema(parameter.get("schema", {})))
                    required = "yes" if parameter.get("required") else "no"
                    meaning = _cell(prose(parameter.get("description", "")))
                    lines.append(f"| `{parameter['name']}` | {parameter['in']} | {kind} | {required} | {meaning} |")
                parts.append("\n".join(lines) + "\n")
            body = operation.get("requestBody")
            if body:
                kinds = ", ".join(
                    f"`{kind}` ({_schema(content.get('schema', {}))})" for kind, content in body["content"].items()
                )
                parts.append(f"Body{' (required)' if body.get('required') else ''}: {kinds}.\n")
            lines = ["| status | meaning | body |", "|---|---|---|"]
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                shown = ", ".join(f"`{kind}` {_schema(value.get('schema', {}))}" for kind, value in content.items())
                lines.append(f"| {status} | {_cell(prose(response.get('description', '')))} | {_cell(shown)} |")
            parts.append("\n".join(lines) + "\n")
    parts.append("## Schemas\n")
    for name, schema in DOCUMENT["components"]["schemas"].items():
        parts.append(f"### {name} {{ #schema-{name.lower()} }}\n")
        if schema.get("description"):
            parts.append(prose(schema["description"].strip()) + "\n")
        properties = schema.get("properties", {})
        if not properties:
            parts.append(f"```json\n{json.dumps(schema, indent=2)}\n```\n")
            continue
        required = set(schema.get("required", []))
        lines = ["| field | type | meaning |", "|---|---|---|"]
        for field, value in properties.items():
            mark = " (required)" if field in required else ""
            lines.append(
                f"| `{field}`{mark} | {_cell(_schema(value))} | {_cell(prose(value.get('description', '')))} |"
            )
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


# --- The hook ------------------------------------------------------------------------------------------------------


def generated(kind: str) -> tuple[str, list[str]]:
    """A marker's Markdown, and the problems found while making it."""
    if kind == "settings":
        return settings_markdown()
    if kind == "cli":
        return cli_markdown(), []
    if kind == "http":
        return http_markdown(), []
    raise ValueError(f"unknown reference marker {kind!r}")


def expand(markdown: str, where: str = "") -> tuple[str, list[str]]:
    """The page with each marker replaced by its generated part; and the problems met."""
    problems: list[str] = []

    def replace(found: re.Match[str]) -> str:
        text, found_problems = generated(found.group(1))
        problems.extend(found_problems)
        return text

    return MARKER.sub(replace, markdown), problems


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    text, problems = expand(markdown, page.file.src_uri)
    for problem in problems:
        log.warning("%s: %s", page.file.src_uri, problem)
    return text
