"""Every benchmark script imports: a script that imports a name that no longer exists fails here, in CI, and not in
the GPU session that runs it."""

import importlib
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
SCRIPTS = sorted(name[:-3] for name in os.listdir(BENCHMARKS) if name.endswith(".py"))


def test_the_benchmark_scripts_are_found():
    assert {"abaf_beta_detach", "ceilings", "fusion_classification_results", "results_file"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_script_imports(name, monkeypatch):
    # the scripts put benchmarks/ on sys.path themselves; their sibling imports must resolve from a test as well
    monkeypatch.syspath_prepend(BENCHMARKS)
    module = importlib.import_module(name)
    assert os.path.dirname(os.path.abspath(module.__file__)) == BENCHMARKS
