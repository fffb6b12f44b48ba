"""docs/cli.md and every shell example in the docs agree with the command's own parser.

docs/cli.md promises "every command and its options": each subcommand has a section there (a ``##``
heading that names it) that mentions each of its options, and each ``--option`` a section mentions
exists in the parser of a command that section names. Every ``imgzoo ...`` line in a shell block of
README.md or docs/*.md is parsed by ``build_parser()`` itself, so an option that was renamed or
removed, a choice that is no longer offered or a missing required option fails here, naming the line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from imgzoo.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
CLI_PAGE = ROOT / "docs" / "cli.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GLOBAL = {"-h", "--help", "--debug", "--version"}  # the top-level parser's; cli.md documents them once
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
SHELL = ("bash", "sh", "shell", "console", "")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


COMMANDS = subparsers(build_parser())


def options(command: str) -> set[str]:
    return {s for a in COMMANDS[command]._actions for s in a.option_strings}


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each ``##`` section; the text before the first one has the heading ''."""
    parts = re.split(r"^## +(.+)$", text, flags=re.M)
    return [("", parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]


def named(heading: str) -> list[str]:
    """The commands a heading names: ``## models, pretrained, download`` names three."""
    return [c for c in COMMANDS if re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", heading)]


def test_every_command_has_a_section_that_names_each_of_its_options():
    page = sections(CLI_PAGE.read_text())
    missing = {}
    for command in COMMANDS:
        bodies = [body for heading, body in page if command in named(heading)]
        assert bodies, f"docs/cli.md has no '## {command}' section"
        absent = sorted(o for o in options(command) - GLOBAL if not re.search(rf"`{re.escape(o)}\b", bodies[0]))
        if absent:
            missing[command] = absent
    assert missing == {}, f"options docs/cli.md does not name in their command's section: {missing}"


def test_the_global_options_are_documented():
    text = CLI_PAGE.read_text()
    assert [o for o in ("--help", "--debug", "--version") if f"`{o}" not in text] == []


def test_every_option_a_section_names_exists():
    wrong = {}
    for heading, body in sections(CLI_PAGE.read_text()):
        commands = named(heading) or list(COMMANDS)  # the introduction may name any command's options
        known = GLOBAL.union(*(options(c) for c in commands))
        unknown = sorted(set(OPTION.findall(body)) - known)
        if unknown:
            wrong[heading or "(introduction)"] = unknown
    assert wrong == {}, f"docs/cli.md names options its commands do not have: {wrong}"


def shell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every ``imgzoo ...`` line inside a shell code block."""
    found, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        opening = re.match(r"^\s*(`{3,}|~{3,})\s*(\S*)", line)
        if opening and fence is None:
            fence = opening[2].lower()
            continue
        if opening and line.strip().strip(opening[1][0]) == "":
            fence = None
            continue
        command = line.strip().removeprefix("$ ")
        if fence in SHELL and re.match(r"(imgzoo|python -m imgzoo) ", command):
            found.append((number, command))
    return found


EXAMPLES = [(page, n, line) for page in PAGES for n, line in shell_lines(page.read_text())]


def test_the_docs_have_shell_examples_to_check():
    assert len(EXAMPLES) >= 20 and {p.name for p, _, _ in EXAMPLES} >= {"README.md", "cli.md"}


@pytest.mark.parametrize(
    ("page", "number", "line"), EXAMPLES, ids=[f"{p.relative_to(ROOT).as_posix()}:{n}" for p, n, _ in EXAMPLES]
)
def test_shell_example_parses(page: Path, number: int, line: str):
    words = shlex.split(line, comments=True)
    words = words[words.index("imgzoo") + 1 :]
    for end in ("|", ">", ">>", "2>", "&&", ";"):  # what follows belongs to the shell
        if end in words:
            words = words[: words.index(end)]
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(words)
        except SystemExit as exit:
            assert exit.code == 0, f"{page.name}:{number}: {line!r}\n{errors.getvalue()}"


def test_no_doc_page_is_over_2500_words():
    """A page a learner finishes: measurements and history go to docs/notes.md, reference to the docstrings."""
    words = {p.relative_to(ROOT).as_posix(): len(p.read_text().split()) for p in PAGES}
    assert {page: n for page, n in words.items() if n > 2500} == {}
