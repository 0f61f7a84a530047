"""boxes-to-labels: voxel and world round trips on an anisotropic, rotated image, and every refusal."""

import glob
import json
import logging
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mvext.classification.lesion_boxes import CORNER_COLUMNS, boxes_to_labels
from nnunet_mvext.cli import main
from nnunet_mvext.errors import MVExtError

SIZE = (17, 13, 9)  # x, y, z
SPACING = (0.8, 1.3, 3.0)
ORIGIN = (12.5, -40.0, 7.0)
# a proper rotation mixing x and y, and z flipped with y: nothing is the identity
DIRECTION = (0.0, 1.0, 0.0,
             0.0, 0.0, -1.0,
             -1.0, 0.0, 0.0)
HEADER = ",".join(CORNER_COLUMNS)


def _image(direction=DIRECTION):
    image = sitk.Image(SIZE, sitk.sitkFloat32)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(direction)
    return image


@pytest.fixture()
def dataset(tmp_path):
    folder = tmp_path / "Dataset900_Boxes"
    (folder / "imagesTr").mkdir(parents=True)
    for case in ("a", "b", "c"):
        for channel in ("0000", "0001"):
            sitk.WriteImage(_image(), str(folder / "imagesTr" / f"{case}_{channel}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "arterial", "1": "delayed"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    return folder


def _csv(tmp_path, text, name="boxes.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _label(path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def _expected(boxes):
    """Label array (z, y, x) from inclusive ITK index boxes (label, (x0, y0, z0), (x1, y1, z1))."""
    out = np.zeros(SIZE[::-1], np.uint8)
    for label, lo, hi in boxes:
        out[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = label
    return out


VOXEL_BOXES = {"a": [(1, (0, 0, 0), (16, 12, 8)), (2, (3, 4, 5), (10, 12, 7))], "b": [(2, (16, 0, 2), (16, 5, 2))]}


def test_voxel_boxes_round_trip_with_the_reference_geometry(dataset, tmp_path):
    rows = [f"{c},{lab},{','.join(map(str, lo))},{','.join(map(str, hi))}"
            for c, boxes in VOXEL_BOXES.items() for lab, lo, hi in boxes]
    written = boxes_to_labels(str(dataset), _csv(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"))
    assert sorted(os.path.basename(p) for p in written) == ["a.nii.gz", "b.nii.gz"]
    for case, boxes in VOXEL_BOXES.items():
        image, array = _label(dataset / "labelsTr" / f"{case}.nii.gz")
        assert image.GetSize() == SIZE and image.GetOrigin() == pytest.approx(ORIGIN)
        assert image.GetSpacing() == pytest.approx(SPACING) and image.GetDirection() == pytest.approx(DIRECTION)
        assert np.array_equal(array, _expected(boxes)), case
    assert not os.path.exists(dataset / "labelsTr" / "c.nii.gz")


def _world_rows(reference, boxes, flip=(1, 1, 1)):
    rows = []
    for case, case_boxes in boxes.items():
        for label, lo, hi in case_boxes:
            corners = np.array([reference.TransformIndexToPhysicalPoint(
                tuple(int((lo, hi)[b >> k & 1][k]) for k in range(3))) for b in range(8)]) * flip
            rows.append(f"{case},{label},{','.join(f'{v:.6f}' for v in corners.min(0))},"
                        f"{','.join(f'{v:.6f}' for v in corners.max(0))}")
    return rows


@pytest.mark.parametrize("ras", [False, True])
def test_world_boxes_round_trip(dataset, tmp_path, ras):
    reference = sitk.ReadImage(str(dataset / "imagesTr" / "a_0000.nii.gz"))
    rows = _world_rows(reference, VOXEL_BOXES, flip=(-1, -1, 1) if ras else (1, 1, 1))
    boxes_to_labels(str(dataset), _csv(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"), output_folder=str(
        tmp_path / "out"), world=True, ras=ras)
    for case, boxes in VOXEL_BOXES.items():
        image, array = _label(tmp_path / "out" / f"{case}.nii.gz")
        assert image.GetDirection() == pytest.approx(DIRECTION)
        assert np.array_equal(array, _expected(boxes)), case


def test_world_corners_round_outward_and_match_sitk_otherwise(dataset, tmp_path):
    reference = sitk.ReadImage(str(dataset / "imagesTr" / "a_0000.nii.gz"))
    inside = np.array([4.3, 2.8, 1.2]), np.array([9.6, 7.2, 5.49])
    ties = np.array([4.5, 2.5, 1.5]), np.array([9.5, 7.5, 5.5])
    for tag, (lo, hi) in (("inside", inside), ("ties", ties)):
        corners = np.array([reference.TransformContinuousIndexToPhysicalPoint(
            tuple(float((lo, hi)[b >> k & 1][k]) for k in range(3))) for b in range(8)])
        csv = _csv(tmp_path, HEADER + f"\na,2,{','.join(map(str, corners.min(0)))},"
                                      f"{','.join(map(str, corners.max(0)))}\n", f"{tag}.csv")
        boxes_to_labels(str(dataset), csv, output_folder=str(tmp_path / tag), world=True)
        found = np.argwhere(_label(tmp_path / tag / "a.nii.gz")[1])[:, ::-1]  # x, y, z
        if tag == "inside":  # SimpleITK's nearest index of each corner
            expected_lo = reference.TransformPhysicalPointToIndex(tuple(
                reference.TransformContinuousIndexToPhysicalPoint(tuple(map(float, lo)))))
            expected_hi = reference.TransformPhysicalPointToIndex(tuple(
                reference.TransformContinuousIndexToPhysicalPoint(tuple(map(float, hi)))))
        else:  # a corner on the border between two voxels takes both
            expected_lo, expected_hi = (4, 2, 1), (10, 8, 6)
        assert tuple(found.min(0)) == tuple(expected_lo) and tuple(found.max(0)) == tuple(expected_hi), tag


def test_oblique_world_box_covers_the_voxel_box(tmp_path):
    folder = tmp_path / "oblique"
    (folder / "imagesTr").mkdir(parents=True)
    c, s = np.cos(0.4), np.sin(0.4)
    sitk.WriteImage(_image((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)), str(folder / "imagesTr" / "a_0000.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1},
                                                     "file_ending": ".nii.gz"}))
    reference = sitk.ReadImage(str(folder / "imagesTr" / "a_0000.nii.gz"))
    box = {"a": [(1, (6, 4, 2), (9, 7, 5))]}
    boxes_to_labels(str(folder), _csv(tmp_path, HEADER + "\n" + _world_rows(reference, box)[0] + "\n"), world=True)
    array = _label(folder / "labelsTr" / "a.nii.gz")[1]
    assert np.all(array[_expected(box["a"]) == 1] == 1) and array.sum() > _expected(box["a"]).sum()


def test_centre_and_size(dataset, tmp_path):
    csv = _csv(tmp_path, "case_id,label,x_center,y_center,z_center,x_size,y_size,z_size\n"
                         "a,2,5,6,4,3,4,1\n")
    boxes_to_labels(str(dataset), csv)
    # x: 3 voxels around 5 -> 4..6; y: 4 voxels around 6 -> 4.5..7.5, rounded outward -> 4..8; z: 1 voxel -> 4
    assert np.array_equal(_label(dataset / "labelsTr" / "a.nii.gz")[1], _expected([(2, (4, 4, 4), (6, 8, 4))]))


def test_reference_channel_selects_the_image(dataset, tmp_path):
    sitk.WriteImage(sitk.Image((5, 5, 5), sitk.sitkFloat32), str(dataset / "imagesTr" / "a_0001.nii.gz"))
    csv = _csv(tmp_path, HEADER + "\na,2,0,0,0,1,1,1\n")
    boxes_to_labels(str(dataset), csv, reference_channel="0001")
    assert _label(dataset / "labelsTr" / "a.nii.gz")[0].GetSize() == (5, 5, 5)


@pytest.mark.parametrize("text, words", [
    (HEADER + "\na,2,0,0,0,1,1,1\nzzz,2,0,0,0,1,1,1\n", ["row 3", "zzz", "no reference image"]),
    (HEADER + "\na,2,0,0,0,1,1,1\nb,2,10,0,0,17,3,3\n", ["row 3", "case b", "outside the image along x",
                                                          "(17, 13, 9)"]),
    (HEADER + "\na,2,0,0,-1,1,1,1\n", ["row 2", "case a", "along z"]),
    (HEADER + "\na,2,0,5,0,1,4,1\n", ["row 2", "case a", "y_min 5 > y_max 4"]),
    (HEADER + "\na,3,0,0,0,1,1,1\n", ["row 2", "case a", "label 3", "allowed: 1 (organ), 2 (lesion)"]),
    (HEADER + "\na,0,0,0,0,1,1,1\n", ["row 2", "label 0"]),
    (HEADER + "\na,2,0,0,0,1.5,1,1\n", ["row 2", "case a", "not an integer index"]),
    (HEADER + "\na,2,0,0,0,1,one,1\n", ["row 2", "y_max", "not a number"]),
    (HEADER + "\na,2,0,0,0,1,1\n", ["row 2", "expected 8 columns"]),
    ("case_id,label,x_min,x_min,z_min,x_max,y_max,z_max\na,2,0,0,0,1,1,1\n", ["x_min", "more than once"]),
    ("case_id,label,x,y,z\n", ["header must hold exactly"]),
    (HEADER + "\n", ["no box rows"]),
], ids=["unknown_case", "outside_x", "outside_z", "min_gt_max", "unknown_label", "background_label",
        "fractional_voxel", "not_a_number", "short_row", "duplicate_column", "bad_header", "no_rows"])
def test_refusals_name_the_row_and_case_and_write_nothing(dataset, tmp_path, text, words):
    with pytest.raises(MVExtError) as err:
        boxes_to_labels(str(dataset), _csv(tmp_path, text))
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert not os.path.exists(dataset / "labelsTr")


def test_existing_labels_need_force_and_keep_a_backup(dataset, tmp_path):
    boxes_to_labels(str(dataset), _csv(tmp_path, HEADER + "\na,2,0,0,0,1,1,1\n", "first.csv"))
    second = _csv(tmp_path, HEADER + "\na,1,2,2,2,3,3,3\nb,2,0,0,0,0,0,0\n", "second.csv")
    with pytest.raises(MVExtError, match="a.nii.gz.*--force"):
        boxes_to_labels(str(dataset), second)
    assert not os.path.exists(dataset / "labelsTr" / "b.nii.gz")  # refused before writing anything
    boxes_to_labels(str(dataset), second, force=True)
    backups = glob.glob(str(dataset / "labelsTr" / "a.nii.gz.*.bak"))
    assert len(backups) == 1
    shutil.copy(backups[0], tmp_path / "backup.nii.gz")  # nnU-Net ignores the .bak name; SimpleITK needs the ending
    assert np.array_equal(_label(tmp_path / "backup.nii.gz")[1], _expected([(2, (0, 0, 0), (1, 1, 1))]))
    assert np.array_equal(_label(dataset / "labelsTr" / "a.nii.gz")[1], _expected([(1, (2, 2, 2), (3, 3, 3))]))


def test_cases_without_a_box(dataset, tmp_path, caplog):
    csv = _csv(tmp_path, HEADER + "\na,2,0,0,0,1,1,1\n")
    with caplog.at_level(logging.WARNING):
        boxes_to_labels(str(dataset), csv)
    assert "no box" in caplog.text and "b, c" in caplog.text
    assert not os.path.exists(dataset / "labelsTr" / "b.nii.gz")
    boxes_to_labels(str(dataset), csv, output_folder=str(tmp_path / "all"), empty_cases=True)
    image, array = _label(tmp_path / "all" / "c.nii.gz")
    assert image.GetSize() == SIZE and not array.any()


def test_overlapping_labels_are_reported(dataset, tmp_path, caplog):
    csv = _csv(tmp_path, HEADER + "\na,1,0,0,0,5,5,5\na,2,4,4,4,6,6,6\n")
    with caplog.at_level(logging.WARNING):
        boxes_to_labels(str(dataset), csv)
    assert "row 3" in caplog.text and "later row wins" in caplog.text
    assert _label(dataset / "labelsTr" / "a.nii.gz")[1][5, 5, 5] == 2


def test_cli(dataset, tmp_path, caplog):
    csv = _csv(tmp_path, HEADER + "\na,2,0,0,0,1,1,1\n")
    assert main(["boxes-to-labels", str(dataset), csv, "-o", str(tmp_path / "o"), "--empty-cases"]) == 0
    assert sorted(os.listdir(tmp_path / "o")) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    assert main(["boxes-to-labels", str(dataset), csv, "-o", str(tmp_path / "o")]) == 2
    assert "--force" in caplog.text
    assert main(["boxes-to-labels", str(dataset), csv, "--ras"]) == 2
