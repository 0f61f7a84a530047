"""The organisers' fold files as nnU-Net's splits (official_folds.py), and make-splits / plan with a raw
splits_final.json (nnU-Net's planner copies it and asserts it equals the preprocessed one)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.official_folds import LABELS_DIR, name_to_lesion, official_splits, read_label_file


def _labels_dir(mock):
    return os.path.join(mock.folder, LABELS_DIR)


def _crop_cases(mock):
    """The case ids a crop import makes of the labelled patients: {<patient>_<lesion>: patient}."""
    truth = mock.truth()["patients"]
    return {f"{p}_{les['index']}": p for p, t in truth.items() if t["released"] for les in t["lesions"]}


def _classes(mock):
    truth = mock.truth()["patients"]
    return {case: truth[p]["class"] for case, p in _crop_cases(mock).items()}


def _fold_rows(mock, kind, k):
    return read_label_file(os.path.join(_labels_dir(mock), f"{kind}_fold{k}.txt"))


def test_folds_follow_the_files_and_a_patient_follows_its_first_lesion(mock):
    cases = _crop_cases(mock)
    patients = set(cases.values())
    splits, report = official_splits(_labels_dir(mock), cases, _classes(mock))
    assert len(splits) == 5
    # expected from the files: a patient validates in the fold of its lowest-index listed lesion
    first = {}
    for k in range(1, 6):
        for name, _, _ in _fold_rows(mock, "val", k):
            patient, lesion = name_to_lesion(name, patients)
            if patient not in first or int(lesion) < first[patient][0]:
                first[patient] = (int(lesion), k)
    validated = []
    for k, split in enumerate(splits, start=1):
        assert not set(split["train"]) & set(split["val"])
        assert {cases[c] for c in split["val"]} == {p for p, (_, f) in first.items() if f == k}
        assert not {cases[c] for c in split["train"]} & {cases[c] for c in split["val"]}  # a patient in one side
        assert set(split["train"]) | set(split["val"]) == set(cases)
        validated += split["val"]
    assert sorted(validated) == sorted(cases)  # every case validated exactly once
    several = {p for p in patients if len({k for k in range(1, 6) for n, _, _ in _fold_rows(mock, "val", k)
                                          if name_to_lesion(n, patients)[0] == p}) > 1}
    assert {d["patient"] for d in report.patients_in_several_val_folds} == several
    assert not report.class_disagreements and not report.names_not_imported
    assert not report.unlisted_labelled_patients


def test_the_report_names_unlisted_skipped_and_disagreeing_entries(mock):
    cases = _crop_cases(mock)
    skipped = sorted(set(cases.values()))[0]
    cases = {c: p for c, p in cases.items() if p != skipped}
    cases["MR999999_0"] = "MR999999"  # a labelled patient in no fold file
    classes = _classes(mock)
    wrong = next(c for c in cases if c.endswith("_0") and c != "MR999999_0")
    classes[wrong] = (classes[wrong] + 1) % 7
    classes["MR999999_0"] = 0
    splits, report = official_splits(_labels_dir(mock), cases, classes)
    assert report.unlisted_labelled_patients == ["MR999999"]
    assert all("MR999999_0" in s["train"] and "MR999999_0" not in s["val"] for s in splits)
    assert {d["name"].rsplit("_", 1)[0] if d["name"] not in (skipped,) else d["name"]
            for d in report.names_not_imported} == {skipped}
    assert all(d["line"] >= 1 and d["file"].endswith(".txt") for d in report.names_not_imported)
    (disagreement,) = [d for d in report.class_disagreements if d["against"].startswith("the import")]
    assert disagreement["name"] == wrong[:-2] and disagreement["other_class"] == classes[wrong]
    assert any(wrong[:-2] in m for m in report.messages())
    excluded, _ = official_splits(_labels_dir(mock), cases, classes, unlisted="exclude")
    assert all("MR999999_0" not in s["train"] for s in excluded)


def test_resample_case_ids_and_ids_with_hyphens_and_underscores(mock, tmp_path):
    truth = mock.truth()["patients"]
    cases = {p: p for p, t in truth.items() if t["released"]}
    splits, _ = official_splits(_labels_dir(mock), cases)
    assert sorted(c for s in splits for c in s["val"]) == sorted(cases)
    assert any("-" in p for p in cases)
    assert name_to_lesion("MR_7_2", {"MR_7", "MR"}) == ("MR_7", "2")
    assert name_to_lesion("MR_7", {"MR_7", "MR"}) == ("MR_7", "0")
    assert name_to_lesion("MR-40_1", {"MR-40"}) == ("MR-40", "1")
    assert name_to_lesion("MR-41_1", {"MR-40"}) is None


@pytest.mark.parametrize("line, message", [("MR1\n", "line 2: 'MR1'; expected '<case> <class>'"),
                                           ("MR1 x\n", "line 2: 'MR1 x'"),
                                           ("MR1 9\n", "line 2: class 9; allowed"),
                                           ("{first} 1\n", "line 2: '{first}' is listed again \\(first on line 1")])
def test_malformed_fold_files_are_refused_naming_file_and_line(mock, tmp_path, line, message):
    folder = tmp_path / "labels"
    shutil.copytree(_labels_dir(mock), folder)
    rows = (folder / "val_fold2.txt").read_text().splitlines()
    first = rows[0].split()[0]
    (folder / "val_fold2.txt").write_text(rows[0] + "\n" + line.format(first=first))
    with pytest.raises(MVExtError, match="val_fold2.txt, " + message.format(first=first)):
        official_splits(str(folder), _crop_cases(mock))


def test_incomplete_fold_sets_are_refused(mock, tmp_path):
    folder = tmp_path / "labels"
    shutil.copytree(_labels_dir(mock), folder)
    (folder / "val_fold3.txt").unlink()
    with pytest.raises(MVExtError, match="train_fold3.txt has no val_fold3.txt"):
        official_splits(str(folder), _crop_cases(mock))
    (folder / "train_fold3.txt").unlink()
    with pytest.raises(MVExtError, match="numbered \\[1, 2, 4, 5\\]"):
        official_splits(str(folder), _crop_cases(mock))
    with pytest.raises(MVExtError, match="holds no train_fold"):
        official_splits(str(tmp_path), _crop_cases(mock))


# --- make-splits and plan with a raw splits_final.json ---------------------------------------------------------------
DATASET = "Dataset779_RawSplits"


@pytest.fixture()
def split_dataset(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    raw = tmp_path / "nnUNet_raw" / DATASET
    (raw / "imagesTr").mkdir(parents=True)
    labels = {}
    for i in range(12):
        labels[f"case_{i:02d}"] = i % 2
        (raw / "imagesTr" / f"case_{i:02d}_0000.nii.gz").write_bytes(b"")
    (raw / "dataset.json").write_text(json.dumps({
        "file_ending": ".nii.gz", "channel_names": {"0": "a"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": 12, "classification": {"class_names": {"0": "a", "1": "b"}, "labels": labels}}))
    official = [{"train": [c for c in labels if int(c[-2:]) % 3 != k],
                 "val": [c for c in labels if int(c[-2:]) % 3 == k]} for k in range(3)]
    (raw / "splits_final.json").write_text(json.dumps(official))
    return {"raw": raw / "splits_final.json", "pre": tmp_path / "nnUNet_preprocessed" / DATASET / "splits_final.json",
            "official": official}


def test_make_splits_writes_the_raw_file_too_so_planning_copies_the_same_folds(split_dataset):
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import _maybe_copy_splits_file

    from nnunet_mvext.classification.splits import make_splits

    with pytest.raises(MVExtError, match="splits_final.json exists \\(e.g. the official folds of import-lld\\)"):
        make_splits("779", n_folds=4)
    assert not split_dataset["pre"].exists()
    make_splits("779", n_folds=4, force=True)
    raw, pre = json.loads(split_dataset["raw"].read_text()), json.loads(split_dataset["pre"].read_text())
    assert raw == pre and len(raw) == 4 and raw != split_dataset["official"]
    backups = [p for p in os.listdir(split_dataset["raw"].parent)
               if p.startswith("splits_final") and p != "splits_final.json"]
    assert backups and json.loads((split_dataset["raw"].parent / backups[0]).read_text()) == split_dataset["official"]
    _maybe_copy_splits_file(str(split_dataset["raw"]), str(split_dataset["pre"]))  # nnU-Net's own check passes
    make_splits("779", n_folds=4, seed=5, force=True)
    _maybe_copy_splits_file(str(split_dataset["raw"]), str(split_dataset["pre"]))


def test_plan_refuses_different_raw_and_preprocessed_splits_before_any_work(split_dataset):
    from nnunet_mvext.planning.plan_command import plan_dataset

    split_dataset["pre"].parent.mkdir(parents=True)
    other = [{"train": s["val"], "val": s["train"]} for s in split_dataset["official"]]
    split_dataset["pre"].write_text(json.dumps(other))
    with pytest.raises(MVExtError) as info:
        plan_dataset("779", preset="fusion")
    message = str(info.value)
    assert str(split_dataset["raw"]) in message and str(split_dataset["pre"]) in message
    assert "fold 0 train differs" in message and "make-splits" in message and "--force" in message
    assert sorted(os.listdir(split_dataset["pre"].parent)) == ["splits_final.json"]  # no fingerprint, no plans
    assert Path(split_dataset["raw"]).exists()
