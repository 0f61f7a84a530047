"""The mock release has what the import must handle: own grids per series, misregistration, boxes in the challenge's
convention with the annotators' jitter, several lesions, unreleased patients and the defects."""

import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mvext.cli import main
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.alignment import Grid
from nnunet_mvext.lld_mmri.annotation import PHASES, UNRELEASED, read_annotation
from nnunet_mvext.lld_mmri.mock_release import generate_mock_release, lesion_centre


def test_series_have_own_grids_and_boxes_hold_the_lesion(mock):
    truth = mock.truth()
    annotation = read_annotation(mock.folder)
    assert list(annotation) == list(mock.patients)
    for patient, entries in annotation.items():
        grids = []
        for entry in entries:
            path = entry.image_path(mock.folder)
            try:
                grid = Grid.of(sitk.ReadImage(path))
            except RuntimeError:
                continue  # the unreadable series of the defects
            grids.append(grid)
            assert 20 <= min(grid.size) and max(grid.size) <= 64
            for lesion in entry.lesions:
                if lesion.box.problem(grid.size):
                    continue  # the box beyond the slices of the defects
                centre = grid.continuous_index(lesion_centre(truth, patient, lesion.index, entry.phase))
                # box centre = true centre up to the jitter (2 voxels per bound) and rounding to voxels
                assert np.all(np.abs(np.array(lesion.box.centre_index()) - centre) <= 2.5), (patient, entry.phase)
        assert len({g.spacing for g in grids}) == len({g.origin for g in grids}) == len(grids)
        shifts = np.array(list(truth["patients"][patient]["shift_mm"].values()))
        assert np.ptp(shifts, axis=0).max() > 2  # the phases are misregistered by millimetres


def test_lesions_unreleased_patients_and_defects(mock):
    truth = mock.truth()["patients"]
    annotation = read_annotation(mock.folder)
    assert sum(not t["released"] for t in truth.values()) == 1  # round(0.2 * 6)
    assert sorted(len(t["lesions"]) for t in truth.values()) == [1, 1, 1, 1, 3, 3]  # round(0.3 * 6) with several
    for patient, entries in annotation.items():
        categories = {les.category for e in entries for les in e.lesions}
        assert categories == {truth[patient]["class"] if truth[patient]["released"] else UNRELEASED}
    patients = mock.patients
    assert {e.phase for e in annotation[patients[3]]} == set(PHASES) - {"Out Phase"}
    dwi = next(e for e in annotation[patients[2]] if e.phase == "DWI")
    with pytest.raises(RuntimeError):
        sitk.ReadImage(dwi.image_path(mock.folder))
    t2 = next(e for e in annotation[patients[1]] if e.phase == "T2WI")
    size = sitk.ReadImage(t2.image_path(mock.folder)).GetSize()
    assert "beyond the series'" in t2.lesion("0").box.problem(size)


def test_refuses_a_non_empty_folder_and_the_cli_writes_one(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(MVExtError, match="not an empty folder"):
        generate_mock_release(str(tmp_path / "x"), 4)
    out = str(tmp_path / "mock")
    assert main(["make-lld-mock", out, "--patients", "1", "--seed", "3", "--no-defects"]) == 0
    assert os.path.isfile(os.path.join(out, "labels", "Annotation.json"))
    assert len(read_annotation(out)["MR100000"]) == len(PHASES)


def test_exact_boxes_follow_the_challenge_convention(tmp_path):
    """Without jitter a box's centre (x, y max exclusive, z max inclusive) is the lesion's within half a voxel."""
    mock = generate_mock_release(str(tmp_path / "m"), 2, seed=1, box_jitter=0, defects=False)
    truth = mock.truth()
    for patient, entries in read_annotation(mock.folder).items():
        for entry in entries:
            grid = Grid.of(sitk.ReadImage(entry.image_path(mock.folder)))
            for lesion in entry.lesions:
                centre = grid.continuous_index(lesion_centre(truth, patient, lesion.index, entry.phase))
                assert np.all(np.abs(np.array(lesion.box.centre_index()) - centre) <= 0.5 + 1e-6)
