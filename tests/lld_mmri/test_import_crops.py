"""import-lld on a release that holds only the official crops (import_crops.py): the JSON's spacing on the crops, the
phases' lesion centres aligned on the reference crop, the label = the crop minus the official margin, the dataset
layout of import_release, classes from the JSON or labels.txt, the official folds, and the refusals."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.alignment import Grid
from nnunet_mvext.lld_mmri.annotation import PHASES, Box, read_annotation
from nnunet_mvext.lld_mmri.geometry import series_grid
from nnunet_mvext.lld_mmri.import_crops import import_crops
from nnunet_mvext.lld_mmri.mock_release import generate_mock_release, lesion_centre
from nnunet_mvext.lld_mmri.official_crops import box_in_crop, crop_start, official_crop
from nnunet_mvext.lld_mmri.official_folds import name_to_lesion

BLOB_SIGMA_MM = 5.0


def _json(path):
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A 5-patient real-release mock without jitter (8 mm misregistration), and its crops-only copy."""
    root = tmp_path_factory.mktemp("crops")
    mock = generate_mock_release(str(root / "full"), 5, seed=21, unreleased_fraction=0.2, multi_lesion_fraction=0.2,
                                 misregistration_mm=8.0, box_jitter_mm=0, defects=False, test_fraction=0)
    crops = root / "crops_only"
    (crops / "labels").mkdir(parents=True)
    shutil.copytree(os.path.join(mock.folder, "classification_dataset"), crops / "classification_dataset")
    shutil.copy(os.path.join(mock.folder, "labels", "Annotation.json"), crops / "labels" / "Annotation.json")
    return mock, str(crops)


def _series_grids(mock):
    """{(patient, phase): (entry, true series grid)} from the stored headers and the JSON (flip fixed)."""
    truth = mock.truth()
    grids = {}
    for patient, entries in read_annotation(mock.folder).items():
        for entry in entries:
            header = Grid.of(sitk.ReadImage(entry.image_path(mock.folder)))
            grids[(patient, entry.phase)] = (entry, series_grid(
                entry, header, "json", flipped=patient in truth["quirks"]["flipped_patients"]).grid)
    return grids


@pytest.fixture(scope="module")
def blob_import(release, tmp_path_factory):
    """Every crop's pixels replaced by a Gaussian blob (sigma 5 mm, JSON spacing) at the lesion's true centre in that
    crop, then imported."""
    mock, crops = release
    truth = mock.truth()
    blobs = str(tmp_path_factory.mktemp("blobs") / "release")
    shutil.copytree(crops, blobs)
    grids = _series_grids(mock)
    repeated = {r["series"] for r in truth["quirks"]["repeated_slices"]}
    root = os.path.join(blobs, "classification_dataset", "images")
    for case in os.listdir(root):
        patient, lesion = (case, "0") if case in truth["patients"] else tuple(case.rsplit("_", 1))
        for name in os.listdir(os.path.join(root, case)):
            phase = name[:-len(".nii.gz")]
            entry, grid = grids[(patient, phase)]
            if entry.series_uid in repeated:
                os.remove(os.path.join(root, case, name))  # its stored slices are not its geometry's: left out
                continue
            image = sitk.ReadImage(os.path.join(root, case, name))
            centre = grid.continuous_index(lesion_centre(truth, patient, lesion, phase)) - crop_start(
                entry.lesion(lesion).box)
            index = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()[::-1]], indexing="ij"))[::-1]
            mm = (index - centre[:, None, None, None]) * np.array(grid.spacing)[:, None, None, None]
            blob = np.exp(-(mm ** 2).sum(0) / (2 * BLOB_SIGMA_MM ** 2))
            sitk.WriteImage(sitk.GetImageFromArray((1000 * blob).astype(np.int16)), os.path.join(root, case, name))
    raw = str(tmp_path_factory.mktemp("raw_blobs"))
    return mock, import_crops(blobs, 961, raw_folder=raw)


def _centroid(image):
    array = sitk.GetArrayFromImage(image).astype(float)
    array[array < 0.3 * array.max()] = 0
    index = np.stack(np.meshgrid(*[np.arange(n) for n in array.shape], indexing="ij"))
    centre = [(index[a] * array).sum() / array.sum() for a in range(3)][::-1]  # x, y, z
    return np.array(image.TransformContinuousIndexToPhysicalPoint(centre))


def test_the_phases_lesion_centres_coincide_on_the_json_spacing(blob_import):
    """Every phase's blob lands where the reference box's centre is: translation by box centres, on the JSON
    spacing (header spacing 1 x 1 x 1 or no translation would put the blobs mm apart)."""
    mock, result = blob_import
    checked = 0
    for case in result.train_cases:
        label = sitk.ReadImage(os.path.join(result.folder, "labelsTr", case + ".nii.gz"))
        box = np.argwhere(sitk.GetArrayFromImage(label) > 0)
        centre = np.array(label.TransformContinuousIndexToPhysicalPoint(((box.min(0) + box.max(0)) / 2)[::-1]))
        spacing = np.array(label.GetSpacing())
        assert spacing[2] >= 2.0 and spacing[0] <= 1.6  # the JSON's anisotropic spacing, not the crops' 1 x 1 x 1
        for c, phase in enumerate(PHASES):
            image = sitk.ReadImage(os.path.join(result.folder, "imagesTr", f"{case}_{c:04d}.nii.gz"))
            if sitk.GetArrayFromImage(image).max() == 0:
                continue  # the repeated-block series, left out
            assert image.GetSpacing() == label.GetSpacing() and image.GetOrigin() == label.GetOrigin()
            error = np.abs(_centroid(image) - centre)
            assert np.all(error <= np.array([2.0, 2.0, 0.6 * spacing[2] + 1.5])), (case, phase, error)
            checked += 1
    assert checked >= 40


def test_layout_classes_label_and_reference_crop(release, tmp_path):
    mock, crops = release
    truth = mock.truth()
    result = import_crops(crops, 962, raw_folder=str(tmp_path / "raw"))
    folder = result.folder
    expected = sorted(f"{p}_{les['index']}" for p, t in truth["patients"].items() if t["released"]
                      for les in t["lesions"])
    assert sorted(result.train_cases) == expected
    unreleased = [p for p, t in truth["patients"].items() if not t["released"]]
    assert sorted(result.test_cases) == sorted(f"{p}_{les['index']}" for p in unreleased
                                               for les in truth["patients"][p]["lesions"])
    dataset = _json(os.path.join(folder, "dataset.json"))
    assert list(dataset["channel_names"].values()) == list(PHASES) and dataset["numTraining"] == len(expected)
    assert dataset["classification"]["labels"] == {c: truth["patients"][c.rsplit("_", 1)[0]]["class"]
                                                   for c in expected}
    with open(os.path.join(folder, "groups.csv")) as f:
        assert {r["case_id"]: r["group"] for r in csv.DictReader(f)} == {c: c.rsplit("_", 1)[0] for c in expected}
    for name in ("lesions.csv", "missing_phases.json", "alignment.json", "import_report.json", "splits_final.json",
                 ".nnunet_mvext_import_lld.json"):
        assert os.path.isfile(os.path.join(folder, name)), name
    # the reference channel is the C+A crop itself; the label is that crop minus the official margin
    case = expected[0]
    patient, lesion = case.rsplit("_", 1)
    crop_dir = patient if lesion == "0" else case
    crop = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(crops, "classification_dataset", "images", crop_dir,
                                                              "C+A.nii.gz")))
    channel = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "imagesTr", f"{case}_0005.nii.gz")))
    assert np.allclose(channel, crop, atol=1e-2)
    label = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "labelsTr", case + ".nii.gz")))
    entry = next(e for e in read_annotation(mock.folder)[patient] if e.phase == "C+A")
    box = entry.lesion(lesion).box
    z0 = min(box.z_min, 2)
    expected_label = np.zeros_like(label)
    expected_label[z0:z0 + box.z_max - box.z_min + 1, 16:16 + box.y_max - box.y_min, 16:16 + box.x_max - box.x_min] = 1
    assert np.array_equal(label, expected_label)
    # the output grid is the JSON geometry of the crop: spacing, and origin = series origin + spacing * crop start
    image = sitk.ReadImage(os.path.join(folder, "imagesTr", f"{case}_0005.nii.gz"))
    assert np.allclose(image.GetSpacing(), (*entry.pixel_spacing, entry.slice_spacing))
    if patient not in truth["quirks"]["flipped_patients"]:
        assert np.allclose(image.GetOrigin(), np.array(entry.origin) + np.array(image.GetSpacing()) *
                           crop_start(box))
    # the official folds: every training case validated once, a patient's cases together
    splits = _json(os.path.join(folder, "splits_final.json"))
    assert sorted(c for s in splits for c in s["val"]) == expected
    report = _json(os.path.join(folder, "import_report.json"))
    assert report["geometry"]["source"] == "json" and report["official_folds"]["folds"] == 5
    assert report["counts"]["phases_placed_by"]["crop centre"] == 0


def test_flipped_patient_and_hyphenated_id(release, tmp_path):
    mock, crops = release
    truth = mock.truth()
    (flipped,) = truth["quirks"]["flipped_patients"]
    (hyphen,) = truth["quirks"]["hyphenated_patients"]
    (tmp_path / "flipped.txt").write_text(flipped + "\n")
    result = import_crops(crops, 963, raw_folder=str(tmp_path / "raw"), flipped_patients=str(tmp_path /
                                                                                             "flipped.txt"))
    for case in result.train_cases + result.test_cases:
        folder = "imagesTr" if case in result.train_cases else "imagesTs"
        direction = sitk.ReadImage(os.path.join(result.folder, folder, f"{case}_0005.nii.gz")).GetDirection()
        assert direction[8] == (-1.0 if case.startswith(flipped + "_") else 1.0), case
    assert any(c.startswith(hyphen + "_") for c in result.train_cases + result.test_cases)


def test_without_the_json_classes_come_from_labels_txt_and_header_geometry_is_explicit(release, tmp_path):
    mock, crops = release
    bare = tmp_path / "bare"
    shutil.copytree(os.path.join(crops, "classification_dataset"), bare / "classification_dataset")
    with pytest.raises(MVExtError, match="spacing is unknown.*--geometry header"):
        import_crops(str(bare), 964, raw_folder=str(tmp_path / "raw"))
    assert not (tmp_path / "raw").exists() or not os.listdir(tmp_path / "raw")
    result = import_crops(str(bare), 964, raw_folder=str(tmp_path / "raw"), geometry="header")
    truth = mock.truth()["patients"]
    labels = _json(os.path.join(result.folder, "dataset.json"))["classification"]["labels"]
    assert labels == {c: truth[c.rsplit("_", 1)[0]]["class"] for c in result.train_cases}
    image = sitk.ReadImage(os.path.join(result.folder, "imagesTr", f"{result.train_cases[0]}_0000.nii.gz"))
    assert image.GetSpacing() == (1.0, 1.0, 1.0)
    report = _json(os.path.join(result.folder, "import_report.json"))
    assert "no Annotation.json" in report["geometry"]["warning"]
    assert report["counts"]["phases_placed_by"]["official margin"] > 0


def test_a_class_disagreement_and_a_missing_reference_crop_are_reported(release, tmp_path):
    mock, crops = release
    copy = tmp_path / "copy"
    shutil.copytree(crops, copy)
    labels_txt = copy / "classification_dataset" / "labels" / "labels.txt"
    rows = labels_txt.read_text().splitlines()
    name, cls = rows[0].split()
    rows[0] = f"{name} {(int(cls) + 1) % 7}"
    labels_txt.write_text("\n".join(rows) + "\n")
    os.remove(copy / "classification_dataset" / "images" / name / "C+A.nii.gz")
    result = import_crops(str(copy), 965, raw_folder=str(tmp_path / "raw"))
    report = _json(os.path.join(result.folder, "import_report.json"))
    (d,) = report["disagreements"]
    assert d["case_folder"] == name and d["label_file"] == (int(cls) + 1) % 7 and d["used"] == int(cls)
    patient, lesion = name_to_lesion(name, set(mock.patients))
    assert any(s["patient"] == patient and s["lesion"] == lesion and s["action"] == "T2WI is the reference of this "
               "case" for s in report["skipped"])
    assert result.missing_phases[f"{patient}_{lesion}"] == ["C+A"]
    assert any("labels.txt says" in m for m in report["official_folds"]["messages"])


@pytest.mark.parametrize("kwargs, message", [
    ({"alignment": "resample"}, "only --alignment crop"),
    ({"margin": (8, 8, 1)}, "official margin"),
    ({"test_annotation": "x.json"}, "the test set holds whole volumes"),
    ({"geometry": "pixels"}, "--geometry 'pixels'"),
])
def test_refusals_before_any_work(release, tmp_path, kwargs, message):
    _, crops = release
    with pytest.raises(MVExtError, match=message):
        import_crops(crops, 966, raw_folder=str(tmp_path / "raw"), **kwargs)
    assert not (tmp_path / "raw").exists()
    with pytest.raises(MVExtError, match="classification_dataset/images"):
        import_crops(str(tmp_path), 966, raw_folder=str(tmp_path / "raw"))


@pytest.mark.parametrize("box", [Box(2, 30, 0, 9, 36, 1), Box(40, 3, 1, 47, 6, 3), Box(10, 20, 4, 14, 24, 4),
                                 Box(20, 10, 2, 30, 20, 2), Box(5, 5, 3, 45, 33, 4)])
def test_box_in_crop_inverts_the_official_crop(box):
    """On an array whose every voxel is unique, the voxels of the box in the crop (box_in_crop) are the series' box
    voxels, for boxes at the slice ends, the borders and on non-square slices (x against rows: the swapped clamp)."""
    array = np.arange(5 * 38 * 50, dtype=np.int32).reshape(5, 38, 50) + 1  # z, y (38 rows), x (50 columns)
    crop = official_crop(array, box)
    inside = box_in_crop(box)
    got = crop[inside.numpy_slices()]
    want = array[box.numpy_slices()]
    assert got.shape == want.shape
    # the script copies columns x < min(x_max + 16, rows) only (its swapped clamp), the rest is its zero padding
    x = np.arange(box.x_min, box.x_max)
    copied = np.broadcast_to(x < min(box.x_max + 16, array.shape[1]), want.shape)
    assert np.array_equal(got[copied], want[copied]) and np.all(got[~copied] == 0)


def test_of_two_series_of_a_phase_the_crop_is_the_last_one_that_annotates_the_lesion(tmp_path):
    """crop_roi.py writes <case>/<phase>.nii.gz once per series that annotates the lesion: the last one wins."""
    from nnunet_mvext.lld_mmri.annotation import Lesion, SeriesEntry
    from nnunet_mvext.lld_mmri.import_crops import CropCase, _series_of_crop

    path = str(tmp_path / "C+A.nii.gz")
    sitk.WriteImage(sitk.Image([40, 40, 6], sitk.sitkInt16), path)
    box = Box(20, 20, 3, 28, 28, 4)
    first = SeriesEntry("MR1", "s", "first", "C+A", (Lesion("0", 6, box),), (0.7, 0.7), 3.0)
    last = SeriesEntry("MR1", "s", "last", "C+A", (Lesion("0", 6, box),), (1.4, 1.4), 6.0)
    other = SeriesEntry("MR1", "s", "other", "C+A", (Lesion("1", 6, box),), (1.0, 1.0), 5.0)
    skipped = []
    case = CropCase("MR1_0", "MR1", "0", "MR1", "train", 6)
    from nnunet_mvext.lld_mmri.import_crops import _crop_header

    assert _series_of_crop(case, "C+A", _crop_header(path), [first, last, other], skipped).series_uid == "last"
    assert len(skipped) == 1 and "2 series of this phase" in skipped[0].reason
