"""results_file.write_results, used by fusion_classification_results, lld_accuracy and multiview_results: two runs
on one work folder (``--resume`` with other rows) keep each other's rows."""

import json
import multiprocessing
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))
from results_file import write_results

N_ROWS = 150


def test_a_row_written_by_another_run_meanwhile_is_kept(tmp_path):
    path = str(tmp_path / "results.json")
    write_results(path, {"oracle": {"auc": 0.9}})
    (tmp_path / "results.json").write_text(json.dumps({"oracle": {"auc": 0.9}, "abaf_shared": {"auc": 0.8}}))
    merged = write_results(path, {"abaf_shared_from_1": {"auc": 0.7}})     # this run measured only its own row
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == merged == {"oracle": {"auc": 0.9}, "abaf_shared": {"auc": 0.8},
                                 "abaf_shared_from_1": {"auc": 0.7}}


def _write_rows(path: str, prefix: str, barrier) -> None:
    barrier.wait(60)   # both processes write at the same time
    for i in range(N_ROWS):
        write_results(path, {f"{prefix}{i}": {"auc": i, "padding": list(range(200))}})


def test_two_processes_writing_at_once_lose_no_row(tmp_path):
    path = str(tmp_path / "results.json")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_write_rows, args=(path, p, barrier)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert set(json.loads((tmp_path / "results.json").read_text())) == {f"{p}{i}" for p in "ab" for i in range(N_ROWS)}
