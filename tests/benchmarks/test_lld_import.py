"""The import-lld benchmark: its recorded command reproduces the run, and its alignment error measures what it says
(exact boxes: crop within a voxel; resample: the difference of the phases' shifts)."""

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))
import lld_import


def test_recorded_command_spells_out_every_option_and_parses_back_to_the_same_run():
    args = lld_import.parse_arguments(["--workdir", "w", "--patients", "7", "--seed", "3", "--misregistration-mm",
                                       "4.5", "--box-jitter", "0", "2", "--dataset-id", "700", "--prepare",
                                       "--append", "R.md"])
    assert vars(lld_import.parse_arguments(lld_import.explicit_arguments(args))) == vars(args)


def test_alignment_error_of_exact_boxes(tmp_path):
    workdir = str(tmp_path / "bench")
    results = str(tmp_path / "R.md")
    lld_import.main(["--workdir", workdir, "--patients", "4", "--box-jitter", "0", "--dataset-id", "700",
                     "--append", results])
    assert any(line.startswith("| 0 | crop | ") for line in Path(results).read_text().splitlines())
    truth = json.loads(Path(os.path.join(workdir, "release_jitter0", "mock_truth.json")).read_text())
    crop = os.path.join(workdir, "nnUNet_raw", "Dataset700_LLDMMRI2023")
    with open(os.path.join(crop, "alignment.json")) as f:
        placed = [p["placed_by"] for case in json.load(f).values() for name, p in case["phases"].items()
                  if name != case["reference_phase"]]
    _, within = lld_import.alignment_errors(crop, truth)
    # every phase placed by its own exact box is within a voxel; the one beyond its image (a defect) is placed
    # around the reference box's centre and keeps its misregistration
    assert placed.count("reference box") == 1 and within.sum() == len(within) - 1
    folder = os.path.join(workdir, "nnUNet_raw", "Dataset701_LLDMMRI2023")
    errors, _ = lld_import.alignment_errors(folder, truth)
    with open(os.path.join(folder, "alignment.json")) as f:
        record = json.load(f)
    expected = []
    for case, entry in record.items():  # one lesion per case here unless the patient has several
        shifts = truth["patients"][case]["shift_mm"]
        for _ in truth["patients"][case]["lesions"]:
            expected += [np.linalg.norm(np.subtract(shifts[p], shifts["C+A"])) for p in entry["phases"] if p != "C+A"]
    assert np.allclose(errors, expected, atol=1e-6)
