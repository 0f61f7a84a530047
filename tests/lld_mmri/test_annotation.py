"""Annotation.json: the challenge's box convention on a hand-made image, and every refusal of a malformed file."""

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.alignment import Grid, box_label
from nnunet_mvext.lld_mmri.annotation import PHASES, Box, majority_category, read_annotation

SIZE = (9, 7, 5)  # ITK x, y, z: every axis a different length, so a swapped axis shows


def _image(spacing=(0.7, 0.9, 4.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    image = sitk.Image(SIZE, sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetOrigin((-3.0, 12.0, 40.0))
    image.SetDirection(direction)
    return image


def test_box_reads_as_the_challenge_crop_slices_the_numpy_array():
    """The crop code slices array[z_min:z_max+1, y_min:y_max, x_min:x_max]: x along ITK's first axis, z inclusive."""
    image = _image()
    image.SetPixel((6, 2, 3), 7)  # ITK index (x, y, z)
    array = sitk.GetArrayFromImage(image)
    box = Box(x_min=6, y_min=2, z_min=3, x_max=7, y_max=3, z_max=3)
    assert box.size() == (1, 1, 1)
    assert array[box.numpy_slices()].tolist() == [[[7]]]
    assert box.first_voxel() == box.last_voxel() == (6, 2, 3)
    assert box.centre_index() == (6.0, 2.0, 3.0)
    wider = Box(x_min=5, y_min=1, z_min=2, x_max=8, y_max=4, z_max=4)
    assert wider.size() == (3, 3, 3) and wider.centre_index() == (6.0, 2.0, 3.0)
    assert array[wider.numpy_slices()].sum() == 7


def test_box_problem_uses_exclusive_x_y_and_inclusive_z():
    assert Box(0, 0, 0, SIZE[0], SIZE[1], SIZE[2] - 1).problem(SIZE) is None  # the whole image
    assert "beyond the series' 5 slices" in Box(0, 0, 0, 3, 3, SIZE[2]).problem(SIZE)
    assert "beyond the series' 9 voxels along x" in Box(0, 0, 0, SIZE[0] + 1, 3, 1).problem(SIZE)
    assert "beyond the series' 7 voxels along y" in Box(0, 0, 0, 3, SIZE[1] + 1, 1).problem(SIZE)
    assert "empty box" in Box(4, 0, 0, 4, 3, 1).problem(SIZE)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 1, 0, 0, 0, -1, -1, 0, 0)])
def test_box_label_fills_exactly_the_challenge_crop(direction):
    image = _image(direction=direction)
    grid = Grid.of(image)
    box = Box(x_min=2, y_min=1, z_min=1, x_max=6, y_max=4, z_max=3)
    label = sitk.GetArrayFromImage(box_label(grid, [(box, grid)]))
    expected = np.zeros(SIZE[::-1], np.uint8)
    expected[box.numpy_slices()] = 1
    assert np.array_equal(label, expected)


def test_majority_category_ties_go_to_the_reference_phase():
    assert majority_category({"T2WI": 3, "DWI": 3, "C+A": 4}, "C+A") == 3
    assert majority_category({"T2WI": 3, "C+A": 4}, "C+A") == 4
    assert majority_category({"T2WI": 3, "DWI": 4}, "C+A") == 3


def _release(tmp_path, info):
    (tmp_path / "labels").mkdir(parents=True, exist_ok=True)
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "labels" / "Annotation.json").write_text(json.dumps(info))
    return str(tmp_path)


def _entry(phase="C+A", category=2, box=None):
    box = box or {"x_min": 1, "y_min": 1, "z_min": 1, "x_max": 3, "y_max": 3, "z_max": 2}
    return {"studyUID": "st", "seriesUID": "se1", "phase": phase,
            "annotation": {"lesion": {"0": {"category": category, "bbox": {"3D_box": box}}}}}


def test_reads_a_valid_file(tmp_path):
    patients = read_annotation(_release(tmp_path, {"Annotation_info": {"MR1": [_entry(), _entry("In Phase")]}}))
    entries = patients["MR1"]
    assert [e.phase for e in entries] == ["C+A", "In Phase"]
    assert entries[0].lesion("0").box == Box(1, 1, 1, 3, 3, 2) and entries[0].lesion("0").category == 2
    assert entries[0].image_path("R") == os.path.join("R", "images", "MR1", "st", "se1.nii.gz")


@pytest.mark.parametrize("info, message", [
    ({"Annotation_info": {"MR1": [_entry(phase="C+P")]}}, "patient MR1, series se1: unknown phase 'C+P'"),
    ({"Annotation_info": {"MR1": [_entry(phase="c+a")]}}, "unknown phase 'c+a'"),
    ({"Annotation_info": {"MR1": [_entry(category=7)]}}, "lesion 0: 'category' is 7"),
    ({"Annotation_info": {"MR1": [_entry(category="x")]}}, "'category' is 'x'"),
    ({"Annotation_info": {"MR1": [_entry(box={"x_min": 1, "y_min": 1, "z_min": 1, "x_max": 3, "y_max": 3})]}},
     "key 'z_max' is missing"),
    ({"Annotation_info": {"MR1": [_entry(box={"x_min": "a", "y_min": 1, "z_min": 1, "x_max": 3, "y_max": 3,
                                              "z_max": 2})]}}, "'x_min' is 'a'"),
    ({"Annotation_info": {"MR1": [{"seriesUID": "se1", "phase": "C+A", "annotation": {"lesion": {}}}]}},
     "patient MR1, entry 0: key 'studyUID' is missing"),
    ({"Annotation_info": {"MR1": []}}, "patient MR1: expected a non-empty list"),
    ({"Patients": {}}, "key 'Annotation_info' is missing"),
])
def test_refuses_a_malformed_file_naming_patient_series_and_key(tmp_path, info, message):
    with pytest.raises(MVExtError) as error:
        read_annotation(_release(tmp_path, info))
    assert message in str(error.value)


def test_refuses_a_release_without_annotation_json(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(MVExtError, match="labels/Annotation.json does not exist"):
        read_annotation(str(tmp_path))


def test_phase_names_are_the_challenges():
    assert PHASES == ("T2WI", "DWI", "In Phase", "Out Phase", "C-pre", "C+A", "C+V", "C+Delay")
