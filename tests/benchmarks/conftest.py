"""Shared by the benchmark tests: the benchmark scripts import each other as top-level modules."""

import importlib
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")


@pytest.fixture
def benchmark_module(monkeypatch):
    """``benchmark_module(name)``: the script ``benchmarks/<name>.py`` imported with ``benchmarks/`` on the path."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    return importlib.import_module
