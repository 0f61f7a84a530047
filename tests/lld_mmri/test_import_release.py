"""import-lld on a 6-patient mock release: a dataset nnU-Net accepts, cases and splits as documented, skipped entries
reported, missing phases as placeholders with their record, refusals that write nothing, --force that keeps a
user's files."""

import csv
import json
import logging
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mvext.classification.missing_phases import read_missing_phases
from nnunet_mvext.cli import main
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.alignment import OFFICIAL_MARGIN
from nnunet_mvext.lld_mmri.annotation import CLASS_NAMES, PHASES, read_annotation
from nnunet_mvext.lld_mmri.import_release import MARKER, import_release
from nnunet_mvext.lld_mmri.mock_release import lesion_centre

# seed 4 of the 6-patient mock (see conftest): patient 0 unreleased, patients 2 and 3 three lesions each; defects in
# patient 1 (T2WI box beyond the slices), 2 (DWI unreadable), 3 (no Out Phase series)
UNRELEASED, BEYOND, UNREADABLE, MISSING = "MR100000", "MR100037", "MR100074", "MR100111"


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _array(folder, sub, name):
    return sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, sub, name)))


def _listing(folder):
    """Every file and folder under ``folder``, with each file's modification time."""
    return sorted((os.path.relpath(os.path.join(d, f), folder), os.path.getmtime(os.path.join(d, f)))
                  for d, ds, fs in os.walk(folder) for f in fs + ds)


class _InProcessPool:
    """multiprocessing's Pool, run in this process: nnU-Net's check starts a 'spawn' pool, whose workers take
    10-20 s to import nnU-Net on a CI machine; the checks are the same."""

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False

    def starmap(self, function, arguments):
        return [function(*a) for a in arguments]


def test_nnunet_verify_dataset_integrity_accepts_the_dataset(crop_import, monkeypatch, capsys):
    from nnunetv2.experiment_planning import verify_dataset_integrity as module

    monkeypatch.setattr(module.multiprocessing, "get_context", lambda method: SimpleNamespace(
        Pool=lambda processes: _InProcessPool()))
    module.verify_dataset_integrity(crop_import.folder, 1)
    printed = capsys.readouterr().out
    assert "verify_dataset_integrity Done" in printed
    assert "Error" not in printed and "WARNING" not in printed and "Warning" not in printed, printed


def test_crop_cases_dataset_json_and_tables(crop_import, mock):
    truth = mock.truth()["patients"]
    folder = crop_import.folder
    expected_train = sorted(f"{p}_{les['index']}" for p, t in truth.items() if t["released"] for les in t["lesions"])
    assert sorted(crop_import.train_cases) == expected_train
    assert sorted(crop_import.test_cases) == [f"{UNRELEASED}_0"]
    with open(os.path.join(folder, "dataset.json")) as f:
        dataset = json.load(f)
    assert list(dataset["channel_names"].values()) == list(PHASES)
    assert dataset["labels"] == {"background": 0, "lesion": 1} and dataset["numTraining"] == len(expected_train)
    block = dataset["classification"]
    assert list(block["class_names"].values()) == list(CLASS_NAMES)
    assert block["labels"] == {c: truth[c.rsplit("_", 1)[0]]["class"] for c in expected_train}
    assert {r["case_id"]: r["group"] for r in _csv(os.path.join(folder, "groups.csv"))} == \
        {c: c.rsplit("_", 1)[0] for c in expected_train}
    lesions = {r["case_id"]: r for r in _csv(os.path.join(folder, "lesions.csv"))}
    assert lesions[f"{UNRELEASED}_0"]["split"] == "unlabelled" and lesions[f"{UNRELEASED}_0"]["category"] == "-1"
    assert {r["patient"] for r in lesions.values()} == set(truth)
    # the unreleased patient: imagesTs, a box label in labelsTs for predict-cls --roi, no class anywhere
    assert os.path.isfile(os.path.join(folder, "imagesTs", f"{UNRELEASED}_0_0007.nii.gz"))
    assert _array(folder, "labelsTs", f"{UNRELEASED}_0.nii.gz").sum() > 0
    assert not os.path.exists(os.path.join(folder, "labelsTs", "classification.csv"))


def test_crop_label_is_the_reference_box_with_the_margin_around_it(crop_import, mock):
    case = crop_import.train_cases[0]
    patient = case.rsplit("_", 1)[0]
    entry = next(e for e in read_annotation(mock.folder)[patient] if e.phase == "C+A")
    box = entry.lesion(case.rsplit("_", 1)[1]).box
    label = _array(crop_import.folder, "labelsTr", f"{case}.nii.gz")
    image = sitk.ReadImage(os.path.join(crop_import.folder, "imagesTr", f"{case}_0005.nii.gz"))
    assert image.GetSize() == tuple(s + 2 * m for s, m in zip(box.size(), OFFICIAL_MARGIN))
    mx, my, mz = OFFICIAL_MARGIN
    sx, sy, sz = box.size()
    expected = np.zeros_like(label)
    expected[mz:mz + sz, my:my + sy, mx:mx + sx] = 1
    assert np.array_equal(label, expected)
    # the reference channel is the series' own voxels (crop grid = series grid shifted by whole voxels)
    series = sitk.GetArrayFromImage(sitk.ReadImage(entry.image_path(mock.folder))).astype(np.float32)
    inner = _array(crop_import.folder, "imagesTr", f"{case}_0005.nii.gz")[mz:mz + sz, my:my + sy, mx:mx + sx]
    assert np.allclose(inner, series[box.numpy_slices()], atol=1e-3)


def test_resample_has_one_case_per_patient_with_all_its_lesions(resample_import, mock):
    truth = mock.truth()["patients"]
    assert sorted(resample_import.train_cases) == sorted(p for p, t in truth.items() if t["released"])
    assert resample_import.test_cases == (UNRELEASED,)
    for case in resample_import.train_cases:  # what nnU-Net checks: every channel and the label on one grid
        files = [os.path.join("imagesTr", f"{case}_{c:04d}.nii.gz") for c in range(8)] + \
            [os.path.join("labelsTr", f"{case}.nii.gz")]
        images = [sitk.ReadImage(os.path.join(resample_import.folder, f)) for f in files]
        assert len({(i.GetSize(), i.GetSpacing(), i.GetOrigin(), i.GetDirection()) for i in images}) == 1, case
    assert len(truth[UNREADABLE]["lesions"]) == 2  # seed 4 of the real-release mock
    label = sitk.ReadImage(os.path.join(resample_import.folder, "labelsTr", f"{UNREADABLE}.nii.gz"))
    for lesion in ("0", "1"):  # each lesion's true centre in the reference phase's space is labelled
        point = lesion_centre(mock.truth(), UNREADABLE, lesion, "C+A")
        assert label.GetPixel(label.TransformPhysicalPointToIndex(point.tolist())) == 1


@pytest.mark.parametrize("which", ["crop_import", "resample_import"])
def test_skipped_entries_are_named_in_the_report(which, request):
    result = request.getfixturevalue(which)
    with open(os.path.join(result.folder, "import_report.json")) as f:
        report = json.load(f)
    found = {(s["patient"], s["phase"]): s for s in report["skipped"]}
    assert "beyond the series'" in found[(BEYOND, "T2WI")]["reason"] and found[(BEYOND, "T2WI")]["lesion"] == "0"
    assert found[(BEYOND, "T2WI")]["series"]
    assert "unreadable series file" in found[(UNREADABLE, "DWI")]["reason"]
    assert "placeholder" in found[(UNREADABLE, "DWI")]["action"]
    assert found[(MISSING, "Out Phase")]["reason"] == "no series of this phase in Annotation.json"
    assert len(report["skipped"]) == report["counts"]["skipped_or_repaired_entries"] == 3
    assert result.skipped and {(s.patient, s.phase) for s in result.skipped} == set(found)


def test_skipped_entries_are_logged(crop_import_logged):
    text = "\n".join(crop_import_logged[1])
    assert f"patient {BEYOND}, T2WI series" in text and "beyond the series'" in text
    assert f"patient {UNREADABLE}, DWI series" in text and "unreadable series file" in text
    assert f"patient {MISSING}, Out Phase: no series of this phase" in text


def test_missing_phases_are_placeholders_named_in_the_record(crop_import):
    record = read_missing_phases(crop_import.folder)
    assert record == {**{f"{UNREADABLE}_{i}": ["DWI"] for i in range(2)},
                      **{f"{MISSING}_{i}": ["Out Phase"] for i in range(3)}}
    assert crop_import.missing_phases == record
    for case in crop_import.train_cases:
        for c, phase in enumerate(PHASES):
            array = _array(crop_import.folder, "imagesTr", f"{case}_{c:04d}.nii.gz")
            assert (not array.any()) == (phase in record.get(case, [])), (case, phase)


def test_held_out_labelled_patients_go_to_imagests_with_their_class(small_mock, tmp_path):
    held, kept = small_mock.patients
    (tmp_path / "test_patients.txt").write_text(f"# challenge test split\n{held}\n")
    result = import_release(small_mock.folder, 996, raw_folder=str(tmp_path / "raw"), alignment="resample",
                            test_patients=str(tmp_path / "test_patients.txt"))
    assert result.test_cases == (held,) and result.train_cases == (kept,)
    rows = _csv(os.path.join(result.folder, "labelsTs", "classification.csv"))
    assert rows == [{"case_id": held, "class": str(small_mock.truth()["patients"][held]["class"])}]
    (tmp_path / "unknown.txt").write_text("MR1\n")
    with pytest.raises(MVExtError, match="names 1 patient"):
        import_release(small_mock.folder, 995, raw_folder=str(tmp_path / "raw"), test_patients=str(tmp_path /
                                                                                                 "unknown.txt"))


def _broken_release(mock, tmp_path, phase_from, phase_to):
    release = tmp_path / "release"
    (release / "labels").mkdir(parents=True)
    os.symlink(os.path.join(mock.folder, "images"), release / "images")
    with open(os.path.join(mock.folder, "labels", "Annotation.json")) as f:
        text = f.read()
    (release / "labels" / "Annotation.json").write_text(text.replace(f'"phase": "{phase_from}"',
                                                                     f'"phase": "{phase_to}"', 1))
    return str(release)


@pytest.mark.parametrize("case", ["no annotation", "unknown phase", "existing without force", "foreign folder",
                                  "id taken"])
def test_refusals_write_nothing(case, mock, crop_import, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    release, dataset_id = mock.folder, 997
    if case == "no annotation":
        release = str(tmp_path / "empty_release")
        os.makedirs(os.path.join(release, "images"))
        message = "Annotation.json does not exist"
    elif case == "unknown phase":
        release = _broken_release(mock, tmp_path, "C+A", "C+Arterial")
        message = "unknown phase 'C+Arterial'"
    elif case == "existing without force":
        raw, dataset_id = os.path.dirname(crop_import.folder), 991
        message = "add --force"
    elif case == "foreign folder":
        (raw / "Dataset997_LLDMMRI2023").mkdir()
        (raw / "Dataset997_LLDMMRI2023" / "notes.txt").write_text("mine")
        message = "was not written by import-lld"
    else:
        (raw / "Dataset997_Other").mkdir()
        message = "Dataset id 997 is taken by"
    before = _listing(str(raw))
    with pytest.raises(MVExtError, match=re.escape(message)):
        import_release(release, dataset_id, raw_folder=str(raw), alignment="resample",
                       force=case in ("foreign folder", "id taken"))
    assert _listing(str(raw)) == before


def test_force_replaces_only_what_the_earlier_import_wrote(small_mock, tmp_path):
    raw = str(tmp_path / "raw")
    first = import_release(small_mock.folder, 998, raw_folder=raw, alignment="crop")
    notes = os.path.join(first.folder, "notes.txt")
    with open(notes, "w") as f:
        f.write("mine")
    second = import_release(small_mock.folder, 998, raw_folder=raw, alignment="resample", force=True)
    assert Path(notes).read_text() == "mine"
    assert sorted(os.listdir(os.path.join(second.folder, "imagesTr"))) == \
        sorted(f"{c}_{i:04d}.nii.gz" for c in second.train_cases for i in range(len(PHASES)))
    # a file the new import would write, which no import wrote, is refused (and nothing is removed)
    with open(os.path.join(second.folder, MARKER)) as f:
        marker = json.load(f)
    marker["written"].remove(os.path.join("labelsTr", f"{second.train_cases[0]}.nii.gz"))
    with open(os.path.join(second.folder, MARKER), "w") as f:
        json.dump(marker, f)
    before = _listing(second.folder)
    with pytest.raises(MVExtError, match="was not written by import-lld"):
        import_release(small_mock.folder, 998, raw_folder=raw, alignment="resample", force=True)
    assert _listing(second.folder) == before


def test_cli_import_and_refusal(small_mock, tmp_path, caplog):
    raw = str(tmp_path / "raw")
    assert main(["import-lld", small_mock.folder, "-d", "999", "--raw", raw, "--name", "Mock", "--reference-phase",
                 "C+V", "-np", "1"]) == 0
    with open(os.path.join(raw, "Dataset999_Mock", "alignment.json")) as f:
        assert {case["reference_phase"] for case in json.load(f).values()} == {"C+V"}
    with caplog.at_level(logging.ERROR, logger="nnunet_mvext"):
        assert main(["import-lld", small_mock.folder, "-d", "999", "--raw", raw, "--reference-phase", "arterial"]) == 2
    assert "--reference-phase 'arterial': allowed: 'T2WI'" in caplog.text


def test_a_truncated_series_that_itk_would_read_zero_filled_becomes_a_placeholder(small_mock, tmp_path):
    release = str(tmp_path / "release")
    shutil.copytree(small_mock.folder, release)
    patient = small_mock.patients[0]
    entry = next(e for e in read_annotation(release)[patient] if e.phase == "C+V")
    path = entry.image_path(release)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])  # a broken download: the header is there, half of the voxels are not
    assert sitk.ReadImage(path).GetSize()  # ITK reads it without an error
    result = import_release(release, 990, raw_folder=str(tmp_path / "raw"), alignment="crop")
    case = f"{patient}_0"
    assert result.missing_phases == {case: ["C+V"]} == read_missing_phases(result.folder)
    assert not _array(result.folder, "imagesTr", f"{case}_0006.nii.gz").any()
    assert [(s.patient, s.phase, s.series) for s in result.skipped] == [(patient, "C+V", entry.series_uid)]
    with open(os.path.join(result.folder, "import_report.json")) as f:
        assert "truncated or corrupt gzip" in json.load(f)["skipped"][0]["reason"]


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_truncated_files_are_recognised(ending, tmp_path):
    from nnunet_mvext.lld_mmri.import_release import truncated

    path = str(tmp_path / f"a{ending}")
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(30 * 20 * 10, dtype=np.int16).reshape(10, 20, 30)), path)
    assert truncated(path) is None
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-100])
    assert truncated(path).startswith("truncated")
