"""The work folder of the demo and the benchmarks: --force removes only what an earlier run wrote."""

import pytest

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.pipeline import WORKDIR_MARKER, claim_output, prepare_workdir


def _earlier_run(workdir):
    prepare_workdir(str(workdir), force=False)
    for name in ("nnUNet_raw", "logs"):
        claim_output(str(workdir), name)
        (workdir / name).mkdir()
        (workdir / name / "inside.txt").write_text("run output")
    claim_output(str(workdir), "summary.json")
    (workdir / "summary.json").write_text("{}")


def test_force_removes_only_the_outputs_of_the_earlier_run(tmp_path):
    workdir = tmp_path / "demo"
    _earlier_run(workdir)
    (workdir / "my_notes.txt").write_text("the user's")
    (workdir / "my_folder").mkdir()
    (workdir / "my_folder" / "a.txt").write_text("the user's too")

    with pytest.raises(MVExtError, match="--force"):
        prepare_workdir(str(workdir), force=False)
    prepare_workdir(str(workdir), force=True)
    assert sorted(p.name for p in workdir.iterdir()) == sorted([WORKDIR_MARKER, "my_notes.txt", "my_folder"])
    assert (workdir / "my_notes.txt").read_text() == "the user's"
    assert (workdir / "my_folder" / "a.txt").read_text() == "the user's too"


def test_a_user_entry_is_never_claimed_as_an_output(tmp_path):
    workdir = tmp_path / "demo"
    prepare_workdir(str(workdir), force=False)
    (workdir / "logs").mkdir()
    with pytest.raises(MVExtError, match="logs exists and was not written"):
        claim_output(str(workdir), "logs")


def test_a_folder_not_made_by_the_tool_is_refused(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(MVExtError, match="not created by"):
        prepare_workdir(str(tmp_path), force=True)
    assert (tmp_path / "data.txt").read_text() == "x"


def test_a_workdir_that_is_a_file_is_named(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("x")
    with pytest.raises(MVExtError, match="results.txt is a file, not a folder"):
        prepare_workdir(str(path), force=True)


def test_the_demo_says_when_the_lesion_was_not_learnt():
    """A demo whose short training missed the lesion must not present its classification without a word."""
    from nnunet_mvext.demo import DemoResult, format_result

    metrics = {"num_cases": 40, "auc": 0.6, "accuracy": 0.5, "confusion_matrix": [[5, 15], [2, 18]]}
    missed = format_result(DemoResult({"organ": 0.98, "lesion": 0.039}, 0.51, {"nnUNetTrainerFusionABAF": metrics}))
    assert "WARNING: lesion Dice 0.039: the lesion label was not learnt within the demo's 300 iterations" in missed
    learnt = format_result(DemoResult({"organ": 0.98, "lesion": 0.845}, 0.91, {"nnUNetTrainerFusionABAF": metrics}))
    assert "WARNING" not in learnt
