"""docs/reference/ is generated from the code: the committed pages must be what the code writes today."""

import argparse
import re

import pytest

from nnunet_mvext import reference_pages
from nnunet_mvext.reference_pages import PAGES, REGENERATE_COMMAND, repository_root, subcommand_parsers
from nnunet_mvext.training_setup.trainer_settings import SETTING_KINDS, SETTINGS


def _committed(relative: str) -> str:
    path = repository_root() / relative
    assert path.is_file(), f"{relative} is missing: run `{REGENERATE_COMMAND}`"
    return path.read_text(encoding="utf-8")


def test_trainer_settings_page_is_what_the_code_generates():
    page = "docs/reference/trainer_settings.md"
    assert _committed(page) == PAGES[page](), f"{page} is out of date: run `{REGENERATE_COMMAND}`"


def test_cli_page_is_what_the_code_generates():
    page = "docs/reference/cli.md"
    assert _committed(page) == PAGES[page](), f"{page} is out of date: run `{REGENERATE_COMMAND}`"


def test_every_setting_has_a_kind_and_appears_once_under_its_kind():
    page = reference_pages.trainer_settings_page()
    sections = re.split(r"^## ", page, flags=re.M)[1:]
    titles = [reference_pages.KIND_SECTIONS[kind][0] for kind in SETTING_KINDS]
    assert [s.splitlines()[0] for s in sections] == titles
    for name, spec in SETTINGS.items():
        assert spec.kind in SETTING_KINDS, name
        section = sections[SETTING_KINDS.index(spec.kind)]
        assert section.count(f"| `{name}` |") == 1, name
        assert page.count(f"| `{name}` |") == 1, name


def test_a_key_without_a_kind_is_refused(monkeypatch):
    spec = SETTINGS["num_epochs"]
    monkeypatch.setitem(SETTINGS, "num_epochs", type(spec)(**{**spec.__dict__, "kind": ""}))
    with pytest.raises(ValueError, match="num_epochs"):
        reference_pages.trainer_settings_page()


def test_cli_page_lists_every_subcommand_and_every_option_string_with_its_choices_and_default():
    page = reference_pages.cli_page()
    sections = {s.splitlines()[0]: s for s in re.split(r"^## ", page, flags=re.M)[1:]}
    commands = subcommand_parsers()
    assert list(sections) == list(commands)
    for name, (_, parser) in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = action.option_strings or [action.metavar or action.dest]
            row = next((line for line in sections[name].splitlines()
                        if line.startswith("| ") and f"`{names[0]}`" in line.split(" | ")[0]), None)
            assert row is not None, (name, names)
            for option in names:
                assert f"`{option}`" in row, (name, option)
            for choice in action.choices or ():
                assert f"`{choice}`" in row, (name, names, choice)
            if isinstance(action.default, (int, float)) and not isinstance(action.default, bool):
                assert f"`{action.default}`" in row, (name, names)
            assert (" | yes | " in row) == bool(action.required), (name, names)


def test_main_check_reports_a_stale_page_and_writing_fixes_it(tmp_path):
    assert reference_pages.main(["--check", "--root", str(tmp_path)]) == 1
    assert reference_pages.main(["--root", str(tmp_path)]) == 0
    assert reference_pages.main(["--check", "--root", str(tmp_path)]) == 0
    page = tmp_path / "docs/reference/cli.md"
    page.write_text(page.read_text() + "edited by hand\n")
    assert reference_pages.stale_pages(tmp_path) == ["docs/reference/cli.md"]
