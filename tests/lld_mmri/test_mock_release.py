"""The mock release is made as the real release is: geometry only in Annotation.json, anisotropic grids per series,
misregistration, boxes in the challenge's convention with jitter in mm, several lesions, unreleased patients, the
defects, the quirks (flipped patient, repeated slices, hyphenated id), a labelled test set, and the official crops
and fold files exactly as the challenge's scripts write them. Each quirk is checked against the files."""

import copy
import itertools
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mvext.cli import main
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.alignment import Grid
from nnunet_mvext.lld_mmri.annotation import CLASS_NAMES, PHASES, UNRELEASED, read_annotation
from nnunet_mvext.lld_mmri.geometry import series_grid
from nnunet_mvext.lld_mmri.mock_release import TEST_ANNOTATION, _series_array, generate_mock_release, lesion_centre
from nnunet_mvext.lld_mmri.official_crops import official_crop


# --- the challenge's scripts, copied verbatim (LMMMEng/LLD-MMRI2023 main/preprocess/), as the reference -------------
def _crop_roi(temp_image, bbox_info, xy_extension=16, z_extension=2):
    """crop_roi.py's crop_lesion body for one box (only the I/O removed)."""
    x_min = int(bbox_info['x_min'])
    y_min = int(bbox_info['y_min'])
    x_max = int(bbox_info['x_max'])
    y_max = int(bbox_info['y_max'])
    z_min = int(bbox_info['z_min'])
    z_max = int(bbox_info['z_max'])
    if z_min >= temp_image.shape[0]:
        return None
    elif z_max >= temp_image.shape[0]:
        return None
    if xy_extension is not None:
        x_padding_min = int(abs(x_min - xy_extension)) if x_min - xy_extension < 0 else 0
        y_padding_min = int(abs(y_min - xy_extension)) if y_min - xy_extension < 0 else 0
        x_padding_max = int(abs(x_max + xy_extension - temp_image.shape[1]))if x_max + xy_extension > temp_image.shape[1] else 0  # noqa: E501
        y_padding_max = int(abs(y_max + xy_extension - temp_image.shape[2])) if y_max + xy_extension > temp_image.shape[2] else 0  # noqa: E501
        x_min = max(x_min - xy_extension, 0)
        y_min = max(y_min - xy_extension, 0)
        x_max = min(x_max + xy_extension, temp_image.shape[1])
        y_max = min(y_max + xy_extension, temp_image.shape[2])
    if z_extension is not None:
        z_min = max(z_min - z_extension, 0)
        z_max = min(z_max + z_extension, temp_image.shape[0])
    if temp_image.shape[0] == 1:
        roi = temp_image[0, y_min:y_max, x_min:x_max]
        roi = np.expand_dims(roi, axis=0)
    elif z_min == z_max:
        roi = temp_image[z_min, y_min:y_max, x_min:x_max]
        roi = np.expand_dims(roi, axis=0)
    else:
        roi = temp_image[z_min:(z_max+1), y_min:y_max, x_min:x_max]
    if xy_extension is not None:
        roi = np.pad(roi, ((0, 0), (y_padding_min, y_padding_max), (x_padding_min, x_padding_max)), 'constant')
    return roi


def _split_list(my_list, num_parts):
    part_size = len(my_list) // num_parts
    remainder = len(my_list) % num_parts
    result = []
    start = 0
    for i in range(num_parts):
        if i < remainder:
            end = start + part_size + 1
        else:
            end = start + part_size
        result.append(my_list[start:end])
        start = end
    return result


def _gene_cross_val(lab_path, num_folds=5, num_classes=7):
    """gene_cross_val.py's build_dataset after random.seed(66); returns {file name: text} instead of writing."""
    random.seed(66)
    lab_data = np.loadtxt(lab_path, dtype=np.str_)
    n_fold_list = []
    for cls_idx in range(num_classes):
        data_list = []
        for data in lab_data:
            if int(data[-1]) == cls_idx:
                data_list.append(data[0])
        random.shuffle(data_list)
        data_info_list = []
        for item in data_list:
            data_info_list.append({'data': item, 'cls': cls_idx, })
        n_fold_list.append(_split_list(data_info_list, num_folds))
    files = {}
    for i in range(num_folds):
        train_data = []
        val_data = []
        _n_fold_list = copy.deepcopy(n_fold_list)
        for j in range(num_classes):
            val_data.append(_n_fold_list[j][i])
            del _n_fold_list[j][i]
            for item in _n_fold_list[j]:
                train_data.append(item)
        train_data = list(itertools.chain(*train_data))
        val_data = list(itertools.chain(*val_data))
        files[f'train_fold{i+1}.txt'] = "".join(f"{d['data']} {d['cls']}\n" for d in train_data)
        files[f'val_fold{i+1}.txt'] = "".join(f"{d['data']} {d['cls']}\n" for d in val_data)
    return files
# ---------------------------------------------------------------------------------------------------------------------


def _read(path):
    return Path(path).read_text()


def _entries(mock):
    return read_annotation(mock.folder)


def _stored(mock, entry):
    return sitk.ReadImage(entry.image_path(mock.folder))


def test_headers_carry_no_geometry_and_the_json_holds_it_per_phase(mock):
    """Headers 1 x 1 x 1 / origin 0 / identity; JSON: anisotropic spacing in the stated ranges, differing per phase,
    slice_thickness != slice_spacing, an origin; the JSON's grid is the truth's."""
    truth = mock.truth()["patients"]
    for patient, entries in _entries(mock).items():
        spacings = []
        for entry in entries:
            try:
                image = _stored(mock, entry)
            except RuntimeError:
                continue  # the unreadable series of the defects
            assert image.GetSpacing() == (1.0, 1.0, 1.0) and image.GetOrigin() == (0.0, 0.0, 0.0)
            assert image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
            sx, sy = entry.pixel_spacing
            assert sx == sy and 0.6 <= sx <= 1.6 and 2.0 <= entry.slice_spacing <= 8.0
            assert 0.5 * entry.slice_spacing <= entry.slice_thickness <= 0.9 * entry.slice_spacing
            record = truth[patient]["series"][entry.phase]
            assert record["series"] == entry.series_uid
            assert np.allclose(record["spacing"], (sx, sy, entry.slice_spacing))
            assert np.allclose(record["origin"], entry.origin)
            assert list(image.GetSize()) == record["size"]
            assert image.GetSize()[0] > image.GetSize()[1]  # non-square slices (74-80 x 64-70 mm)
            assert max(image.GetSize()) <= 134 and image.GetSize()[2] <= 43
            spacings.append((sx, entry.slice_spacing))
        assert len(set(spacings)) == len(spacings)  # every phase its own grid


def test_boxes_hold_the_lesion_in_mm_with_the_json_geometry(mock):
    """Box centre = true centre up to the jitter (3 mm per bound, rounded to voxels) and rounding, on the JSON grid
    (flip fixed for the flipped patient); the repeated block's series after mapping its slices back."""
    truth = mock.truth()
    quirks = truth["quirks"]
    repeated = quirks["repeated_slices"][0]
    for patient, entries in _entries(mock).items():
        flipped = patient in quirks["flipped_patients"]
        for entry in entries:
            try:
                header = Grid.of(_stored(mock, entry))
            except RuntimeError:
                continue
            grid = series_grid(entry, header, "json", flipped=flipped).grid
            for lesion in entry.lesions:
                if lesion.box.problem(grid.size):
                    continue  # the box beyond the slices of the defects
                index = np.array(lesion.box.centre_index(), dtype=float)
                if entry.series_uid == repeated["series"]:
                    end = repeated["start"] + 2 * repeated["length"]
                    index[2] = np.mean([z - repeated["length"] if z >= end else z
                                        for z in (lesion.box.z_min, lesion.box.z_max)])
                    grid = Grid(tuple(truth["patients"][patient]["series"][entry.phase]["size"][:2]) +
                                (grid.size[2] - repeated["length"],), grid.spacing, grid.origin, grid.direction)
                error = np.abs(grid.physical_point(index) - lesion_centre(truth, patient, lesion.index, entry.phase))
                assert np.all(error <= 3.0 + np.array(grid.spacing) + 1e-6), (patient, entry.phase, error)


def test_the_flipped_patient_is_upside_down(mock):
    """The flipped patient's boxes are where the truth lies once slice k is read as slice N - 1 - k, and far from it
    without (>= 10 mm per series on average). (That its pixels go with its boxes is checked by the crops test:
    crop_roi.py's crop of the stored pixels at the stored boxes.)"""
    truth = mock.truth()
    (flipped,) = truth["quirks"]["flipped_patients"]
    assert truth["patients"][flipped]["flipped"] and truth["patients"][flipped]["released"]
    errors = [0.0, 0.0]
    for entry in _entries(mock)[flipped]:
        grid = series_grid(entry, Grid.of(_stored(mock, entry)), "json").grid  # no fix
        for lesion in entry.lesions:
            centre = lesion_centre(truth, flipped, lesion.index, entry.phase)
            true_k = grid.continuous_index(centre)[2]
            stored_k = np.mean([lesion.box.z_min, lesion.box.z_max])
            errors[0] += abs(stored_k - (grid.size[2] - 1 - true_k)) * grid.spacing[2]
            errors[1] += abs(stored_k - true_k) * grid.spacing[2]
    assert errors[1] > 10 * len(_entries(mock)[flipped]) and errors[1] > 3 * errors[0]  # visibly flipped


def _noiseless(truth, patient, phase):
    """The series of ``phase`` drawn again on its true grid from the truth (noise N(0, 0.15) of another stream)."""
    t = truth["patients"][patient]
    record = t["series"][phase]
    size = np.array(record["size"])
    if record["repeated_block"]:
        size[2] -= record["repeated_block"]["length"]
    levels = {k: np.array(v) if k != "bias_phase" else v for k, v in t["levels"].items()}
    lesions = [(np.array(les["centre_mm"]), les["radius_mm"]) for les in t["lesions"]]
    return _series_array(size, np.array(record["spacing"]), np.array(record["origin"]), np.array(t["shift_mm"][phase]),
                         np.array(t["liver_radii_mm"]), lesions, PHASES.index(phase), levels,
                         np.random.default_rng(0)).astype(float)


def _near_lesions(truth, patient, phase, shape):
    """Voxels of the true grid within 3 mm of a lesion (numpy order z, y, x)."""
    t = truth["patients"][patient]
    record = t["series"][phase]
    axes = [np.array(record["origin"][a]) + np.array(record["spacing"][a]) * np.arange(n)
            for a, n in zip(range(3), shape[::-1])]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    mask = np.zeros(shape, dtype=bool)
    for les in t["lesions"]:
        c = np.array(les["centre_mm"]) + np.array(t["shift_mm"][phase])
        mask |= (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= (les["radius_mm"] + 3) ** 2
    return mask


def test_the_flipped_patients_pixels_are_upside_down(mock):
    """Read upside down, the flipped patient's stored series match a noiseless redraw on their true grid around the
    lesions; read as stored they do not."""
    truth = mock.truth()
    (flipped,) = truth["quirks"]["flipped_patients"]
    residual = [0.0, 0.0]
    for entry in _entries(mock)[flipped]:
        stored = sitk.GetArrayFromImage(_stored(mock, entry)).astype(float)
        expected = _noiseless(truth, flipped, entry.phase)
        near = _near_lesions(truth, flipped, entry.phase, expected.shape)
        residual[0] += np.mean((stored[::-1][near] - expected[near]) ** 2)
        residual[1] += np.mean((stored[near] - expected[near]) ** 2)
    # upside down: the noise of two draws (2 x 15^2 per voxel); as stored: 3-5 times more on seeds 0, 4 and 7
    assert residual[0] / len(PHASES) < 1.5 * 2 * 15.0 ** 2 and residual[0] < 0.5 * residual[1]


def test_the_repeated_block_is_stored_twice_and_named(mock):
    truth = mock.truth()
    (rep,) = truth["quirks"]["repeated_slices"]
    assert rep["phase"] == "In Phase" and rep["length"] == 3 and rep["patient"] not in truth["quirks"][
        "flipped_patients"]
    entry = next(e for e in _entries(mock)[rep["patient"]] if e.phase == "In Phase")
    assert entry.series_uid == rep["series"]
    array = sitk.GetArrayFromImage(_stored(mock, entry))
    record = truth["patients"][rep["patient"]]["series"]["In Phase"]
    assert array.shape[0] == record["size"][2]
    start, n = rep["start"], rep["length"]
    assert np.array_equal(array[start:start + n], array[start + n:start + 2 * n])
    for k in range(array.shape[0] - n):  # no other run of 3 slices repeats
        if k != start:
            assert not np.array_equal(array[k:k + n], array[k + n:k + 2 * n])
    # without the copy the series is its true grid's: it matches a noiseless redraw near the lesions
    expected = _noiseless(truth, rep["patient"], "In Phase")
    near = _near_lesions(truth, rep["patient"], "In Phase", expected.shape)
    without = np.delete(array, np.arange(start + n, start + 2 * n), axis=0).astype(float)
    assert np.mean((without[near] - expected[near]) ** 2) < 1.5 * 2 * 15.0 ** 2


def test_lesions_unreleased_patients_defects_and_the_hyphenated_id(mock):
    truth = mock.truth()["patients"]
    annotation = _entries(mock)
    assert sum(not t["released"] for t in truth.values()) == 1  # round(0.2 * 6)
    assert sorted(len(t["lesions"]) for t in truth.values()) == [1, 1, 1, 1, 2, 3]  # round(0.3 * 6) with several
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
    (hyphen,) = mock.truth()["quirks"]["hyphenated_patients"]
    assert "-" in hyphen and hyphen == patients[-1] and os.path.isdir(os.path.join(mock.folder, "images", hyphen))


def test_the_test_set_is_labelled_and_disjoint(mock):
    truth = mock.truth()
    test = read_annotation(mock.folder, os.path.join(mock.folder, TEST_ANNOTATION))
    assert list(test) == list(mock.test_patients) == list(truth["test_patients"])
    assert len(test) == 2 and not set(test) & set(mock.patients)  # round(0.25 * 6)
    for patient, entries in test.items():
        assert {e.phase for e in entries} == set(PHASES)
        assert {les.category for e in entries for les in e.lesions} == {truth["test_patients"][patient]["class"]}
        for entry in entries:
            assert entry.image_path(os.path.join(mock.folder, "lldmmri_test_set")).startswith(mock.folder)
            assert os.path.isfile(entry.image_path(os.path.join(mock.folder, "lldmmri_test_set")))
            assert entry.slice_spacing is not None and entry.origin is not None


def test_crops_are_crop_roi_py_exactly(mock):
    """Every crop file equals crop_roi.py's crop of the stored series (copied verbatim above), folder <patient> for
    lesion 0 and <patient>_<idx> otherwise, spacing 1 / origin 0; the entries crop_roi.py skips have no crop."""
    expected = {}
    for patient, entries in _entries(mock).items():
        for entry in entries:
            try:
                array = sitk.GetArrayFromImage(_stored(mock, entry))
            except RuntimeError:
                continue
            for lesion in entry.lesions:
                roi = _crop_roi(array, lesion.box.as_dict())
                if roi is not None:
                    case = patient if int(lesion.index) == 0 else f"{patient}_{lesion.index}"
                    expected[(case, entry.phase)] = roi
    root = os.path.join(mock.folder, "classification_dataset", "images")
    written = {(case, name[:-len(".nii.gz")]) for case in os.listdir(root) for name in os.listdir(os.path.join(
        root, case))}
    assert written == set(expected)
    assert (mock.patients[1], "T2WI") not in written and (mock.patients[2], "DWI") not in written
    for (case, phase), roi in expected.items():
        image = sitk.ReadImage(os.path.join(root, case, phase + ".nii.gz"))
        assert image.GetSpacing() == (1.0, 1.0, 1.0) and image.GetOrigin() == (0.0, 0.0, 0.0)
        assert np.array_equal(sitk.GetArrayFromImage(image), roi), (case, phase)


@pytest.mark.parametrize("box", [dict(x_min=2, x_max=9, y_min=30, y_max=36, z_min=0, z_max=1),   # low x, high y
                                 dict(x_min=40, x_max=47, y_min=3, y_max=6, z_min=3, z_max=4),   # high x
                                 dict(x_min=10, x_max=14, y_min=20, y_max=24, z_min=4, z_max=4),  # last slice
                                 dict(x_min=1, x_max=3, y_min=1, y_max=2, z_min=5, z_max=5)])    # beyond
def test_official_crop_keeps_the_scripts_swapped_clamp_on_non_square_slices(box):
    array = np.arange(5 * 38 * 50, dtype=np.int16).reshape(5, 38, 50)  # z, y (38 rows), x (50 columns)
    reference = _crop_roi(array, box)
    ours = official_crop(array, box)
    assert (ours is None) == (reference is None)
    if reference is not None:
        assert np.array_equal(ours, reference)


def test_label_and_fold_files_are_gene_cross_val_py_exactly(mock):
    truth = mock.truth()
    labels_dir = os.path.join(mock.folder, "classification_dataset", "labels")
    rows = [line.split() for line in _read(os.path.join(labels_dir, "labels.txt")).splitlines()]
    inaccessible = [line.split() for line in _read(os.path.join(labels_dir, "labels_val_inaccessible.txt"))
                    .splitlines()]
    crops = set(os.listdir(os.path.join(mock.folder, "classification_dataset", "images")))
    assert {c for c, _ in rows} | {c for c, _ in inaccessible} == crops
    assert {k for _, k in inaccessible} == {"-1"} and {k for _, k in rows} <= {str(k) for k in range(7)}
    for case, k in rows:
        patient = case if case in truth["patients"] else case.rsplit("_", 1)[0]
        assert int(k) == truth["patients"][patient]["class"]
    reference = _gene_cross_val(os.path.join(labels_dir, "labels.txt"))
    for name, text in reference.items():
        assert _read(os.path.join(labels_dir, name)) == text, name


def test_legacy_mock_keeps_the_header_geometry(tmp_path):
    mock = generate_mock_release(str(tmp_path / "m"), 2, seed=1, box_jitter=0, defects=False, real_release=False)
    truth = mock.truth()
    assert not os.path.exists(os.path.join(mock.folder, "classification_dataset"))
    assert not os.path.exists(os.path.join(mock.folder, "lldmmri_test_set")) and mock.test_patients == ()
    for patient, entries in read_annotation(mock.folder).items():
        for entry in entries:
            grid = Grid.of(sitk.ReadImage(entry.image_path(mock.folder)))
            assert 1.5 <= grid.spacing[0] <= 2.0 and entry.slice_spacing is None and entry.origin is None
            for lesion in entry.lesions:
                centre = grid.continuous_index(lesion_centre(truth, patient, lesion.index, entry.phase))
                assert np.all(np.abs(np.array(lesion.box.centre_index()) - centre) <= 0.5 + 1e-6)


def test_exact_boxes_follow_the_challenge_convention(tmp_path):
    """Without jitter a box's centre (x, y max exclusive, z max inclusive) is the lesion's within half a voxel, on
    the JSON geometry."""
    mock = generate_mock_release(str(tmp_path / "m"), 2, seed=1, box_jitter_mm=0, defects=False, test_fraction=0)
    truth = mock.truth()
    flipped = truth["quirks"]["flipped_patients"]
    for patient, entries in read_annotation(mock.folder).items():
        for entry in entries:
            if entry.phase == "In Phase" and patient in {r["patient"] for r in truth["quirks"]["repeated_slices"]}:
                continue
            grid = series_grid(entry, Grid.of(sitk.ReadImage(entry.image_path(mock.folder))), "json",
                               flipped=patient in flipped).grid
            for lesion in entry.lesions:
                centre = grid.continuous_index(lesion_centre(truth, patient, lesion.index, entry.phase))
                assert np.all(np.abs(np.array(lesion.box.centre_index()) - centre) <= 0.5 + 1e-6)


def test_refusals_and_the_cli(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(MVExtError, match="not an empty folder"):
        generate_mock_release(str(tmp_path / "x"), 6)
    with pytest.raises(MVExtError, match="--no-quirks"):
        generate_mock_release(str(tmp_path / "y"), 4)
    out = str(tmp_path / "mock")
    assert main(["make-lld-mock", out, "--patients", "2", "--seed", "3", "--no-defects", "--test-fraction", "0.5",
                 "--box-jitter-mm", "1"]) == 0
    truth = json.loads(_read(os.path.join(out, "mock_truth.json")))
    assert truth["real_release"] and truth["box_jitter_mm"] == 1 and len(truth["test_patients"]) == 1
    assert len(read_annotation(out)["MR-100037"]) == len(PHASES)
    legacy = str(tmp_path / "legacy")
    assert main(["make-lld-mock", legacy, "--patients", "1", "--no-defects", "--legacy"]) == 0
    assert sitk.ReadImage(read_annotation(legacy)["MR100000"][0].image_path(legacy)).GetSpacing()[0] >= 1.5
    assert len(CLASS_NAMES) == 7
