"""The README's promises that CI and users rely on, and the trainer table of docs/reference/trainers.md."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def _first_screen_commands():
    first_screen = "\n".join(_read("README.md").splitlines()[:40])
    return re.findall(r"```bash\n(.+?)\n```", first_screen)


def test_first_screen_has_the_demo_and_test_commands():
    demo, tests = _first_screen_commands()[:2]
    assert demo.startswith("pip install") and demo.endswith("nnunet-mvext demo")
    assert tests.startswith("pip install") and "pytest" in tests


def _ci_steps():
    """The commands of .ci/run in order, a line joined with `&&` split into its commands."""
    lines = [line.strip() for line in _read(".ci", "run").splitlines()]
    return [step.strip() for line in lines if line and not line.startswith("#") for step in line.split(" && ")]


def test_ci_runs_exactly_the_readme_test_command_with_the_linter_before_the_tests():
    readme_steps = [step.strip() for step in _first_screen_commands()[1].split(" && ")]
    expected = [*readme_steps[:-1], "ruff check .", readme_steps[-1]]
    assert _ci_steps()[-len(expected):] == expected


def test_every_trainer_entry_point_is_in_the_trainer_table_of_the_reference_page():
    pyproject = _read("pyproject.toml")
    section = pyproject.split('[project.entry-points."nnunetv2.trainers"]', 1)[1].split("\n[", 1)[0]
    names = re.findall(r"^(\w+) = ", section, flags=re.M)
    assert names
    page = _read("docs", "reference", "trainers.md")
    for name in names:
        assert f"| `{name}` |" in page, name
