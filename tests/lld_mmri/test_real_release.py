"""import-lld on a release whose headers hold no geometry (as the real LLD-MMRI 2023 release): the geometry comes from
Annotation.json, flipped patients are fixed in the geometry, defects are reported, and the import's writes survive a
user's edits, a kill and a second import at the same time."""

import copy
import fcntl
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri import import_release as module
from nnunet_mvext.lld_mmri.annotation import read_annotation
from nnunet_mvext.lld_mmri.import_release import MARKER, import_release
from nnunet_mvext.lld_mmri.mock_release import generate_mock_release, lesion_centre


def _move_geometry_to_json(folder: str, flip: tuple = ()) -> None:
    """Rewrite a mock release as the real one is: every header spacing 1, origin 0; the true geometry only in
    Annotation.json (pixel_spacing, slice_spacing, origin; slice_thickness set to another value). The series of the
    patients in ``flip`` are stored upside down (pixels and boxes reversed along z, the JSON geometry unchanged)."""
    path = os.path.join(folder, "labels", "Annotation.json")
    with open(path) as f:
        content = json.load(f)
    for patient, items in content["Annotation_info"].items():
        for item in items:
            image_path = os.path.join(folder, "images", patient, item["studyUID"], item["seriesUID"] + ".nii.gz")
            image = sitk.ReadImage(image_path)
            spacing, origin = image.GetSpacing(), image.GetOrigin()
            item.update(pixel_spacing=list(spacing[:2]), slice_spacing=spacing[2], slice_thickness=spacing[2] * 0.7,
                        origin=list(origin))
            array = sitk.GetArrayFromImage(image)
            n = array.shape[0]
            if patient in flip:
                array = array[::-1]
                for lesion in item["annotation"]["lesion"].values():
                    box = lesion["bbox"]["3D_box"]
                    box["z_min"], box["z_max"] = n - 1 - box["z_max"], n - 1 - box["z_min"]
            stripped = sitk.GetImageFromArray(array)  # spacing 1, origin 0, identity direction
            sitk.WriteImage(stripped, image_path, useCompression=True)
    with open(path, "w") as f:
        json.dump(content, f)


_FLIPPED = {}


@pytest.fixture(scope="module")
def real_like(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("real") / "release")
    mock = generate_mock_release(folder, 4, seed=21, unreleased_fraction=0, multi_lesion_fraction=0, defects=False,
                                 box_jitter=0, real_release=False)  # the legacy mock: the quirks are placed here
    _FLIPPED["patient"] = _flipped_patient(mock)
    _move_geometry_to_json(folder, flip=(_FLIPPED["patient"],))
    return mock


def _flipped_patient(mock) -> str:
    """The patient whose C+A lesion lies farthest from its series' middle slice (where flipping moves it most)."""
    truth = mock.truth()

    def offset(patient):
        entry = next(e for e in read_annotation(mock.folder)[patient] if e.phase == "C+A")
        image = sitk.ReadImage(entry.image_path(mock.folder))
        middle = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])[2]
        return abs(lesion_centre(truth, patient, "0", "C+A")[2] - middle)

    return max(mock.patients, key=offset)


def _release_copy(real_like, tmp_path, images: bool = True):
    """``(folder, Annotation.json content)``: a release folder of its own (its ``images/`` a link to the mock's) whose
    annotation a test may change and write back with :func:`_write_annotation`."""
    release = tmp_path / "release"
    (release / "labels").mkdir(parents=True)
    if images:
        os.symlink(os.path.join(real_like.folder, "images"), release / "images")
    with open(os.path.join(real_like.folder, "labels", "Annotation.json")) as f:
        return release, json.load(f)


def _write_annotation(release, content) -> None:
    (release / "labels" / "Annotation.json").write_text(json.dumps(content))


def _spacing(folder: str, case: str, channel: int = 5) -> tuple:
    return sitk.ReadImage(os.path.join(folder, "imagesTr", f"{case}_{channel:04d}.nii.gz")).GetSpacing()


def _report(folder: str) -> dict:
    with open(os.path.join(folder, "import_report.json")) as f:
        return json.load(f)


def test_json_geometry_is_set_on_the_pixels_and_header_geometry_is_what_the_headers_say(real_like, tmp_path):
    annotation = read_annotation(real_like.folder)
    json_result = import_release(real_like.folder, 801, raw_folder=str(tmp_path / "a"), alignment="resample")
    header_result = import_release(real_like.folder, 802, raw_folder=str(tmp_path / "b"), alignment="resample",
                                   geometry="header")
    for patient in json_result.train_cases:
        reference = next(e for e in annotation[patient] if e.phase == "C+A")
        expected = (*reference.pixel_spacing, reference.slice_spacing)
        assert np.allclose(_spacing(json_result.folder, patient), expected)
        assert np.allclose(_spacing(header_result.folder, patient), (1, 1, 1))
        # the reference phase resampled onto its own grid is its series, voxel for voxel: the geometry was set on
        # the pixels before resampling, not only on the output grid
        written = sitk.GetArrayFromImage(sitk.ReadImage(
            os.path.join(json_result.folder, "imagesTr", f"{patient}_0005.nii.gz")))
        source = sitk.GetArrayFromImage(sitk.ReadImage(reference.image_path(real_like.folder)))
        assert np.allclose(written, source)
    report = _report(json_result.folder)["geometry"]
    assert report["source"] == "json"
    with open(os.path.join(json_result.folder, "dataset.json")) as f:
        assert json.load(f)["reference_phase"] == "C+A"  # the misalignment augmentation keeps it fixed
    assert report["series_per_field_source"]["z_spacing"] == {"json": 32}
    # the headers hold no geometry: every series disagrees, reported once with counts
    assert report["header_json_disagreements"]["series_per_field"] == {"inplane_spacing": 32, "z_spacing": 32,
                                                                       "origin": 32}
    with open(os.path.join(json_result.folder, "alignment.json")) as f:
        record = json.load(f)
    assert record[json_result.train_cases[0]]["geometry_source"] == "json"
    assert record[json_result.train_cases[0]]["phases"]["C+A"]["geometry"]["z_spacing"] == "json"


def test_crop_channels_lie_where_the_truth_says_with_the_json_geometry(real_like, tmp_path):
    """With the geometry from the JSON, the crop's lesion (the box centre) maps to the true lesion centre in mm; the
    flipped patient only with --flipped-patients."""
    truth = real_like.truth()
    flipped = _FLIPPED["patient"]
    flip_file = tmp_path / "flipped.txt"
    flip_file.write_text(f"# published list\n{flipped}\nMR999999\n", encoding="utf-16")
    fixed = import_release(real_like.folder, 803, raw_folder=str(tmp_path / "a"), alignment="crop",
                           flipped_patients=str(flip_file))
    unfixed = import_release(real_like.folder, 804, raw_folder=str(tmp_path / "b"), alignment="crop")
    reference = next(e for e in read_annotation(real_like.folder)[flipped] if e.phase == "C+A")
    slices = sitk.ReadImage(reference.image_path(real_like.folder)).GetSize()[2]
    for result, fixed_flip in ((fixed, True), (unfixed, False)):
        for case in result.train_cases:
            patient = case.rsplit("_", 1)[0]
            image = sitk.ReadImage(os.path.join(result.folder, "imagesTr", f"{case}_0005.nii.gz"))
            centre = np.array(image.TransformContinuousIndexToPhysicalPoint(
                [(s - 1) / 2 for s in image.GetSize()]))
            expected = lesion_centre(truth, patient, "0", "C+A")
            if patient == flipped and not fixed_flip:  # upside down: z mirrored about the series' centre
                expected[2] = 2 * reference.origin[2] + (slices - 1) * reference.slice_spacing - expected[2]
            assert np.linalg.norm(centre - expected) < 3 * max(image.GetSpacing()), (case, centre, expected)
    geometry = _report(fixed.folder)["geometry"]["flipped_patients"]
    assert geometry["applied"] == [flipped] and geometry["listed_not_in_release"] == ["MR999999"]


def test_older_json_copies_use_slice_thickness_with_a_warning_and_no_geometry_is_a_missing_phase(real_like, tmp_path):
    release, content = _release_copy(real_like, tmp_path)
    first = next(iter(content["Annotation_info"]))
    for item in content["Annotation_info"][first]:
        del item["slice_spacing"]
        if item["phase"] == "DWI":
            for key in ("pixel_spacing", "slice_thickness", "origin"):
                del item[key]
    _write_annotation(release, content)
    result = import_release(str(release), 805, raw_folder=str(tmp_path / "raw"), alignment="crop")
    report = _report(result.folder)
    assert report["geometry"]["series_per_field_source"]["z_spacing"]["json slice_thickness"] == 7
    assert any("slice_thickness" in w["warning"] and w["patient"] == first for w in report["geometry"]["fallbacks"])
    assert result.missing_phases[f"{first}_0"] == ["DWI"]
    assert any(s["patient"] == first and s["phase"] == "DWI" and "no geometry" in s["reason"]
               for s in report["skipped"])


def test_a_far_series_and_repeated_slices_are_reported(real_like, tmp_path):
    release, content = _release_copy(real_like, tmp_path)
    patient = real_like.patients[2]
    moved = next(i for i in content["Annotation_info"][patient] if i["phase"] == "T2WI")
    moved["origin"][2] += 120.0
    _write_annotation(release, content)
    # a copy of the images with one series holding a repeated block of three slices
    images = tmp_path / "images_copy"
    os.unlink(release / "images")
    shutil.copytree(os.path.join(real_like.folder, "images"), images)
    os.symlink(images, release / "images")
    target = next(i for i in content["Annotation_info"][patient] if i["phase"] == "In Phase")
    path = images / patient / target["studyUID"] / (target["seriesUID"] + ".nii.gz")
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    array = np.concatenate([array[:8], array[5:8], array[8:]])
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    result = import_release(str(release), 806, raw_folder=str(tmp_path / "raw"), alignment="crop")
    report = _report(result.folder)
    far = [o for o in report["orientation_outliers"]]
    assert [(o["patient"], o["phase"]) for o in far] == [(patient, "T2WI")] and far[0]["distance_mm"] > 100
    assert [(r["patient"], r["phase"], r["repeated"]) for r in report["repeated_slices"]] == \
        [(patient, "In Phase", "slices 8..10 repeat slices 5..7")]
    assert report["counts"]["series_far_from_the_other_phases"] == 1


def test_a_phase_placed_outside_its_series_is_recorded_missing(real_like, tmp_path):
    release, content = _release_copy(real_like, tmp_path)
    patient = real_like.patients[0]
    item = next(i for i in content["Annotation_info"][patient] if i["phase"] == "C+V")
    item["origin"][0] += 500.0  # the series lies far away: its box centre too, so drop its box as well
    item["annotation"]["lesion"]["0"]["bbox"]["3D_box"]["z_min"] = 10 ** 4
    _write_annotation(release, content)
    result = import_release(str(release), 807, raw_folder=str(tmp_path / "raw"), alignment="crop")
    assert result.missing_phases[f"{patient}_0"] == ["C+V"]
    with open(os.path.join(result.folder, "missing_phases.json")) as f:
        assert json.load(f) == {f"{patient}_0": ["C+V"]}
    array = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(result.folder, "imagesTr", f"{patient}_0_0006.nii.gz")))
    assert not array.any()


def test_test_annotation_patients_go_to_imagests_with_classes_and_a_patient_in_both_is_refused(real_like, tmp_path):
    release, content = _release_copy(real_like, tmp_path)
    test_patients = real_like.patients[2:]
    train = {p: v for p, v in content["Annotation_info"].items() if p not in test_patients}
    test = {p: v for p, v in content["Annotation_info"].items() if p in test_patients}
    (release / "labels" / "Annotation.json").write_text(json.dumps({"Annotation_info": train}))
    test_set = tmp_path / "lldmmri_test_set"
    (test_set / "labels").mkdir(parents=True)
    os.symlink(os.path.join(real_like.folder, "images"), test_set / "images")
    (test_set / "labels" / "Annotation_test.json").write_text(json.dumps({"Annotation_info": test}))
    result = import_release(str(release), 808, raw_folder=str(tmp_path / "raw"), alignment="crop",
                            test_annotation=str(test_set / "labels" / "Annotation_test.json"))
    assert sorted(result.test_cases) == sorted(f"{p}_0" for p in test_patients)
    truth = real_like.truth()["patients"]
    with open(os.path.join(result.folder, "labelsTs", "classification.csv")) as f:
        rows = [line.strip().split(",") for line in f][1:]
    assert sorted(rows) == sorted([f"{p}_0", str(truth[p]["class"])] for p in test_patients)
    assert sorted(os.listdir(os.path.join(result.folder, "labelsTs"))) == sorted(
        [f"{p}_0.nii.gz" for p in test_patients] + ["classification.csv"])
    both = dict(test, **{real_like.patients[0]: content["Annotation_info"][real_like.patients[0]]})
    (test_set / "labels" / "Annotation_test.json").write_text(json.dumps({"Annotation_info": both}))
    with pytest.raises(MVExtError, match=f"both .*{real_like.patients[0]}"):
        import_release(str(release), 809, raw_folder=str(tmp_path / "raw2"), alignment="crop",
                       test_annotation=str(test_set / "labels" / "Annotation_test.json"))
    assert not (tmp_path / "raw2" / "Dataset809_LLDMMRI2023").exists()


def test_a_patient_listed_twice_is_refused_before_anything_is_written(real_like, tmp_path):
    release, content = _release_copy(real_like, tmp_path)
    patient = real_like.patients[0]
    entries = json.dumps(content["Annotation_info"][patient])
    text = json.dumps(content)
    # the same key twice in one object is valid JSON; json.load would keep only the second listing
    text = text.replace('"Annotation_info": {', f'"Annotation_info": {{"{patient}": {entries}, ', 1)
    (release / "labels" / "Annotation.json").write_text(text)
    with pytest.raises(MVExtError, match=f"'{patient}' appears twice"):
        import_release(str(release), 810, raw_folder=str(tmp_path / "raw"))
    assert os.listdir(tmp_path / "raw") == []


def test_a_concurrent_import_into_the_same_raw_folder_is_refused(real_like, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    fd = os.open(raw, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another import holds the raw folder
    try:
        with pytest.raises(MVExtError, match="Another import-lld is writing into the raw folder"):
            import_release(real_like.folder, 811, raw_folder=str(raw))
    finally:
        os.close(fd)
    assert os.listdir(raw) == []


def test_a_huge_margin_is_refused_before_the_dataset_folder_exists(real_like, tmp_path):
    with pytest.raises(MVExtError, match="smaller --margin"):
        import_release(real_like.folder, 812, raw_folder=str(tmp_path), margin=(4000, 4000, 40))
    assert not (tmp_path / "Dataset812_LLDMMRI2023").exists()


@pytest.fixture()
def earlier_import(real_like, tmp_path):
    raw = str(tmp_path / "raw")
    return import_release(real_like.folder, 813, raw_folder=raw, alignment="crop"), raw


def test_force_keeps_files_the_user_changed_as_backups(real_like, earlier_import):
    result, raw = earlier_import
    with open(os.path.join(result.folder, MARKER)) as f:
        marker = json.load(f)
    assert marker["complete"] is True and "dataset.json" in marker["sha256"]
    dataset_json = os.path.join(result.folder, "dataset.json")
    with open(dataset_json) as f:
        content = json.load(f)
    content["my_curated_key"] = "keep me"
    with open(dataset_json, "w") as f:
        json.dump(content, f)
    label = os.path.join(result.folder, "labelsTr", result.train_cases[0] + ".nii.gz")
    edited = sitk.ReadImage(label)
    sitk.WriteImage(edited * 0, label)  # a hand correction
    import_release(real_like.folder, 813, raw_folder=raw, alignment="crop", force=True)
    backups = sorted(f for f in os.listdir(result.folder) if f.startswith("dataset.json.") and f.endswith(".bak"))
    assert len(backups) == 1
    with open(os.path.join(result.folder, backups[0])) as f:
        assert json.load(f)["my_curated_key"] == "keep me"
    label_backups = [f for f in os.listdir(os.path.join(result.folder, "labelsTr")) if f.endswith(".bak")]
    assert label_backups == [label_backups[0]] and label_backups[0].startswith(result.train_cases[0] + ".nii.gz.")
    # unchanged files are not backed up
    assert not [f for f in os.listdir(os.path.join(result.folder, "imagesTr")) if f.endswith(".bak")]
    assert _report(result.folder)["backups_of_changed_files"]


def test_a_kill_during_the_removal_of_the_earlier_import_leaves_a_folder_force_clears(real_like, earlier_import,
                                                                                       monkeypatch):
    result, raw = earlier_import
    real_remove, calls = os.remove, {"n": 0}

    def killed_after_three(path):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("killed")
        real_remove(path)

    monkeypatch.setattr(module.os, "remove", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        import_release(real_like.folder, 813, raw_folder=raw, alignment="crop", force=True)
    monkeypatch.setattr(module.os, "remove", real_remove)
    assert os.path.isfile(os.path.join(result.folder, MARKER))
    again = import_release(real_like.folder, 813, raw_folder=raw, alignment="crop", force=True)
    assert sorted(again.train_cases) == sorted(result.train_cases)


def test_dataset_json_is_written_last(real_like, tmp_path, monkeypatch):
    """A kill before the end leaves no dataset.json (nnU-Net refuses the folder) and an incomplete marker; the
    missing-phase record and the other side files are already there."""
    import nnunetv2.dataset_conversion.generate_dataset_json as generator

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(generator, "generate_dataset_json", killed)
    with pytest.raises(KeyboardInterrupt):
        import_release(real_like.folder, 814, raw_folder=str(tmp_path), alignment="crop")
    folder = tmp_path / "Dataset814_LLDMMRI2023"
    assert not (folder / "dataset.json").exists()
    for name in ("missing_phases.json", "groups.csv", "lesions.csv", "alignment.json", "import_report.json"):
        assert (folder / name).is_file(), name
    with open(folder / MARKER) as f:
        assert json.load(f)["complete"] is False


def test_geometry_keys_are_validated_by_name(real_like, tmp_path):
    release, content = _release_copy(real_like, tmp_path, images=False)
    for key, value, allowed in (("pixel_spacing", [0.7, -0.7], "2 positive numbers"),
                                ("slice_spacing", "6", "a positive number"), ("origin", [1, 2], "3 finite numbers")):
        broken = copy.deepcopy(content)
        next(iter(broken["Annotation_info"].values()))[0][key] = value
        (release / "labels" / "Annotation.json").write_text(json.dumps(broken))
        with pytest.raises(MVExtError, match=f"'{key}' is .*{allowed}"):
            read_annotation(str(release))


def test_the_official_folds_become_nnunets_splits_and_a_patient_stays_in_one_fold(crop_import):
    with open(os.path.join(crop_import.folder, "splits_final.json")) as f:
        splits = json.load(f)
    assert len(splits) == 5
    train = set(crop_import.train_cases)
    assert set().union(*(set(s["val"]) for s in splits)) | set().union(*(set(s["train"]) for s in splits)) <= train
    for fold in splits:
        patients_val = {c.rsplit("_", 1)[0] for c in fold["val"]}
        assert not {c for c in fold["train"] if c.rsplit("_", 1)[0] in patients_val}, fold
    report = _report(crop_import.folder)
    assert report["official_folds"]["folds"] == 5
    with open(os.path.join(crop_import.folder, MARKER)) as f:
        assert "splits_final.json" in json.load(f)["written"]


def test_import_lld_from_crops_and_a_release_without_volumes(mock, tmp_path, monkeypatch):
    from nnunet_mvext.cli import main

    release = tmp_path / "crops_only"
    (release / "labels").mkdir(parents=True)
    shutil.copy(os.path.join(mock.folder, "labels", "Annotation.json"), release / "labels")
    os.symlink(os.path.join(mock.folder, "classification_dataset"), release / "classification_dataset")
    with pytest.raises(MVExtError, match="--from-crops"):
        import_release(str(release), 815, raw_folder=str(tmp_path / "raw"))
    assert main(["import-lld", str(release), "-d", "815", "--raw", str(tmp_path / "raw"), "--from-crops"]) == 0
    folder = tmp_path / "raw" / "Dataset815_LLDMMRI2023"
    assert (folder / "dataset.json").is_file() and (folder / "splits_final.json").is_file()
    assert _report(str(folder))["geometry"]


def test_force_leaves_a_split_file_the_import_did_not_write(real_like, earlier_import):
    result, raw = earlier_import  # a release without fold files: the import writes no splits_final.json
    mine = os.path.join(result.folder, "splits_final.json")
    with open(mine, "w") as f:
        json.dump([{"train": ["a"], "val": ["b"]}], f)
    import_release(real_like.folder, 813, raw_folder=raw, alignment="crop", force=True)
    with open(mine) as f:
        assert json.load(f) == [{"train": ["a"], "val": ["b"]}]


def test_force_after_a_kill_while_writing_clears_the_partial_import_without_backups(real_like, tmp_path,
                                                                                   monkeypatch):
    raw = str(tmp_path / "raw")
    real_write, calls = module.write_case, {"n": 0}

    def killed_after_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt("killed")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(module, "write_case", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        import_release(real_like.folder, 816, raw_folder=raw, alignment="crop", num_processes=1)
    monkeypatch.setattr(module, "write_case", real_write)
    result = import_release(real_like.folder, 816, raw_folder=raw, alignment="crop", force=True)
    assert not [f for d, _, fs in os.walk(result.folder) for f in fs if f.endswith(".bak")]


def test_a_malformed_fold_file_is_refused_before_anything_is_written(mock, tmp_path):
    release = tmp_path / "release"
    (release / "labels").mkdir(parents=True)
    os.symlink(os.path.join(mock.folder, "images"), release / "images")
    shutil.copy(os.path.join(mock.folder, "labels", "Annotation.json"), release / "labels")
    shutil.copytree(os.path.join(mock.folder, "classification_dataset", "labels"),
                    release / "classification_dataset" / "labels")
    (release / "classification_dataset" / "labels" / "val_fold3.txt").write_text("MR100000 HCC\n")
    with pytest.raises(MVExtError, match="val_fold3.txt, line 1"):
        import_release(str(release), 817, raw_folder=str(tmp_path / "raw"))
    assert os.listdir(tmp_path / "raw") == []


def test_a_preprocessed_split_that_differs_from_the_official_folds_is_named(mock, tmp_path, monkeypatch):
    preprocessed = tmp_path / "pre" / "Dataset818_LLDMMRI2023"
    preprocessed.mkdir(parents=True)
    (preprocessed / "splits_final.json").write_text(json.dumps([{"train": ["x"], "val": ["y"]}]))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    result = import_release(mock.folder, 818, raw_folder=str(tmp_path / "raw"))
    assert _report(result.folder)["official_folds"]["preprocessed_split_differs"] == \
        str(preprocessed / "splits_final.json")


def test_a_flipped_patient_reaches_nnunet_upright(real_like, tmp_path):
    """nnU-Net reads arrays and ignores the direction: with --flipped-patients the case's array runs along the world
    axes, i.e. the stored series reversed along z (resample: the reference phase voxel for voxel)."""
    flipped = _FLIPPED["patient"]
    flip_file = tmp_path / "flipped.txt"
    flip_file.write_text(flipped)
    result = import_release(real_like.folder, 819, raw_folder=str(tmp_path), alignment="resample",
                            flipped_patients=str(flip_file))
    reference = next(e for e in read_annotation(real_like.folder)[flipped] if e.phase == "C+A")
    source = sitk.GetArrayFromImage(sitk.ReadImage(reference.image_path(real_like.folder)))
    written = sitk.ReadImage(os.path.join(result.folder, "imagesTr", f"{flipped}_0005.nii.gz"))
    assert np.allclose(sitk.GetArrayFromImage(written), source[::-1])
    assert np.allclose(np.array(written.GetDirection()).reshape(3, 3), np.eye(3))
