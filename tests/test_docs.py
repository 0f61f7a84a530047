"""README.md and docs/: links resolve, the README reaches every how-to guide, and every shell command in the pages
names a real subcommand and real flags.

Each ```bash block in docs/ carries a mark in the line above it: ``<!-- command-check: WHY -->``. Every line of every
block is parsed (``nnunet-mvext`` with the package's own argparse parser; nnU-Net's console scripts against the
``add_argument`` calls of the function their entry point names). A block marked ``<!-- command-check: run in tests …
-->``
runs at mock scale on the CPU in seconds and is also executed here; the others say why they are not run (a GPU, a
real dataset, hours).
"""

import argparse
import contextlib
import importlib
import importlib.metadata
import inspect
import io
import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from nnunet_mvext.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
DOC_PAGES = [p for p in PAGES if p.parent != ROOT]

# Commands the pages may use besides nnunet-mvext and nnU-Net's console scripts; their arguments are not checked.
OTHER_COMMANDS = {"pip", "python", "export", "eval", "bash", "ps", "pkill", "cd", "mkdir"}

# The mark of a block that this module runs (in a temporary folder, nnUNet_raw/_preprocessed/_results set there).
RUN_MARK = "run in tests"

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_MARK = re.compile(r"<!-- command-check: (.+?) -->")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------------------- links


def _prose(text: str) -> str:
    """The page without fenced blocks and inline code, where a bracket is not a link."""
    return re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def _anchors(path: Path) -> frozenset:
    headings = re.findall(r"^#{1,6} (.+)$", _FENCE.sub("", path.read_text(encoding="utf-8")), flags=re.M)
    return frozenset(_slug(h) for h in headings)


def _relative_links(page: Path):
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        yield target


def _broken_links(page: Path) -> list[str]:
    broken = []
    for target in _relative_links(page):
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    assert _broken_links(page) == []


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-heading) [gone](missing.md) [bad anchor](other.md#nothing) `[code](nope.md)`\n")
    assert [b.split(":")[0] for b in _broken_links(page)] == ["missing.md", "other.md#nothing"]


def test_readme_is_a_front_door_that_reaches_every_how_to_guide_in_one_click():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in _relative_links(ROOT / "README.md")}
    guides = sorted((ROOT / "docs" / "how_to").glob("*.md"))
    assert guides
    for page in [*guides, ROOT / "docs" / "getting_started.md", ROOT / "docs" / "troubleshooting.md",
                 ROOT / "docs" / "reference" / "trainer_settings.md", ROOT / "docs" / "reference" / "cli.md"]:
        assert page.resolve() in linked, f"README.md does not link {_rel(page)}"


def test_every_page_is_listed_in_the_docs_index():
    index = ROOT / "docs" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in _relative_links(index)}
    for page in DOC_PAGES:
        if page != index:
            assert page.resolve() in linked, f"docs/README.md does not list {_rel(page)}"


# ------------------------------------------------------------------------------------------------------- commands


def _bash_blocks(page: Path):
    """(mark or None, block text, line number) of every ```bash block of the page."""
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            mark = _MARK.search(lines[i - 1]) if i else None
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            yield (mark.group(1) if mark else None), "\n".join(lines[i + 1:end]), i + 1
            i = end
        i += 1


def shell_commands(block: str) -> list[list[str]]:
    """The simple commands of a block: continuation lines joined, comments dropped, split at ``&&``, ``;`` and
    ``|``, loop keywords removed, ``$VAR`` left as a word."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|"):
                if words:
                    commands.append(words)
                words = []
            elif not words and token in ("do", "then", "done", "fi"):
                continue
            else:
                words.append(token)
    return [c for c in commands if c[0] != "for"]


def _parse_error(parser: argparse.ArgumentParser, argv: list[str]):
    """argparse's error message for argv, or None when it parses."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args(argv)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1]
    return None


@lru_cache(maxsize=None)
def nnunet_flags(command: str) -> frozenset:
    """The option strings of an nnU-Net console script: the add_argument calls in the function its entry point
    names (read from nnU-Net's installed source, no subprocess)."""
    entry = next((e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == command), None)
    assert entry is not None, f"{command} is not one of nnU-Net's console scripts"
    module, _, function = entry.value.partition(":")
    source = inspect.getsource(getattr(importlib.import_module(module), function))
    flags = set()
    for call in re.findall(r"add_argument\(([^)]*)", source):
        flags.update(re.findall(r"""['"](-{1,2}[A-Za-z][\w-]*)['"]""", call))
    assert flags, f"found no add_argument call for {command}"
    return frozenset(flags | {"-h", "--help"})


@lru_cache(maxsize=1)
def _strict_parser() -> argparse.ArgumentParser:
    """The package's parser, refusing abbreviated flags: a page must spell every flag as the parser defines it."""
    parser = build_parser()
    parser.allow_abbrev = False
    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for subparser in sub.choices.values():
            subparser.allow_abbrev = False
    return parser


def command_problems(words: list[str]) -> list[str]:
    """What is wrong with one command of a page: an unknown subcommand or flag, a bad value or count."""
    name = words[0]
    if name == "nnunet-mvext":
        # shell variables become a value their flag accepts: an integer where the flag wants one
        argv = ["1" if w.startswith("$") and "/" not in w else w for w in words[1:]]
        error = _parse_error(_strict_parser(), argv)
        return [error] if error else []
    if name.startswith("nnUNetv2_"):
        known = nnunet_flags(name)
        return [f"{name} has no flag {w}" for w in words[1:]
                if re.match(r"^-{1,2}[A-Za-z]", w) and w.split("=")[0] not in known]
    if name in OTHER_COMMANDS:
        return []
    return [f"unknown command {name!r}"]


def _blocks():
    for page in DOC_PAGES:
        for mark, block, line in _bash_blocks(page):
            yield pytest.param(page, mark, block, id=f"{_rel(page)}:{line}")


@pytest.mark.parametrize("page,mark,block", list(_blocks()))
def test_every_command_in_the_docs_parses(page, mark, block):
    assert mark, "a ```bash block without <!-- command-check: … --> in the line above (run, or why not)"
    problems = [f"{' '.join(words)}: {problem}"
                for words in shell_commands(block) for problem in command_problems(words)]
    assert problems == []


def test_the_command_check_finds_a_wrong_subcommand_flag_or_value():
    assert command_problems(["nnunet-mvext", "predict-cls", "--no-such-flag"])
    assert command_problems(["nnunet-mvext", "evaluate-clss", "-ref", "a.csv"])
    assert command_problems(["nnunet-mvext", "make-splits", "D", "--folds", "five"])
    assert command_problems(["nnunet-mvext", "demo", "--device", "tpu"])
    assert command_problems(["nnunet-mvext", "evaluate-cls", "--cv", "-d", "D", "-o", "cv", "--store-thresh"])
    assert command_problems(["nnUNetv2_train", "D", "3d_fullres", "0", "-trainer", "X"])
    assert command_problems(["nnUNetv2_predict", "-i", "in", "-o", "out", "--no_such_flag"])
    assert command_problems(["nnunet-mvxt", "demo"])
    assert not command_problems(["nnUNetv2_train", "D", "3d_fullres", "0", "-tr", "X", "-p", "P", "--c"])
    assert shell_commands("for f in 0 1; do nnUNetv2_train D c $f -tr T; done  # x\nnnunet-mvext env && ls | wc") == [
        ["nnUNetv2_train", "D", "c", "$f", "-tr", "T"], ["nnunet-mvext", "env"], ["ls"], ["wc"]]


def _runnable_blocks():
    for page in DOC_PAGES:
        for mark, block, line in _bash_blocks(page):
            if mark and mark.startswith(RUN_MARK):
                yield pytest.param(block, id=f"{_rel(page)}:{line}")


@pytest.mark.parametrize("block", list(_runnable_blocks()))
def test_blocks_marked_run_run_on_the_cpu(block, tmp_path):
    env = dict(os.environ, nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "preprocessed"),
               nnUNet_results=str(tmp_path / "results"))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    for name in ("raw", "preprocessed", "results"):
        (tmp_path / name).mkdir()
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
