"""fusion_classification_results: two runs on one work folder (``--resume`` with other rows) keep each other's rows."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))
from fusion_classification_results import write_results


def test_a_row_written_by_another_run_meanwhile_is_kept(tmp_path):
    path = str(tmp_path / "results.json")
    mine = write_results(path, {"oracle": {"auc": 0.9}})           # this run read the file with the oracle only
    (tmp_path / "results.json").write_text(json.dumps({**mine, "abaf_shared": {"auc": 0.8}}))   # another run
    merged = write_results(path, {**mine, "abaf_shared_from_1": {"auc": 0.7}, "oracle": {"auc": 0.91}})
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == merged == {"oracle": {"auc": 0.91}, "abaf_shared": {"auc": 0.8},
                                 "abaf_shared_from_1": {"auc": 0.7}}
