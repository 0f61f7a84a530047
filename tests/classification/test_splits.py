"""make-splits: stratified by class, grouped by patient, never overwriting without --force."""

import json
import logging
import os
from pathlib import Path

import pytest

from nnunet_mvext.classification.splits import make_splits
from nnunet_mvext.cli import main
from nnunet_mvext.errors import MVExtError

DATASET = "Dataset778_Splits"


@pytest.fixture()
def dataset(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    raw = tmp_path / "nnUNet_raw" / DATASET
    (raw / "imagesTr").mkdir(parents=True)
    # 40 cases of 16 patients (1-4 scans each); classes 0/1/2 by patient, class 2 rare (5 patients)
    cases, labels, groups = [], {}, {}
    for patient in range(16):
        cls = 2 if patient % 3 == 2 and patient < 15 else patient % 2
        for _ in range(1 + patient % 4):
            case = f"case_{len(cases):03d}"
            cases.append(case)
            labels[case], groups[case] = cls, f"patient_{patient}"
            for ch in range(2):
                (raw / "imagesTr" / f"{case}_{ch:04d}.nii.gz").write_bytes(b"")
    (raw / "dataset.json").write_text(json.dumps({
        "file_ending": ".nii.gz", "classification": {"class_names": {"0": "a", "1": "b", "2": "c"},
                                                      "labels": labels}}))
    groups_csv = tmp_path / "groups.csv"
    groups_csv.write_text("case_id,group\n" + "".join(f"{c},{g}\n" for c, g in groups.items()))
    target = tmp_path / "nnUNet_preprocessed" / DATASET / "splits_final.json"
    return {"cases": cases, "labels": labels, "groups": groups, "groups_csv": str(groups_csv), "target": target,
            "results": tmp_path / "nnUNet_results"}


def test_folds_are_grouped_stratified_and_complete(dataset):
    path = make_splits("778", groups_csv=dataset["groups_csv"], n_folds=5, seed=1)
    splits = json.loads(Path(path).read_text())
    assert path == str(dataset["target"]) and len(splits) == 5
    vals = [set(s["val"]) for s in splits]
    assert sorted(c for v in vals for c in v) == sorted(dataset["cases"])  # every case validated exactly once
    for s in splits:
        assert set(s["train"]) | set(s["val"]) == set(dataset["cases"]) and not set(s["train"]) & set(s["val"])
    groups = dataset["groups"]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not {groups[c] for c in vals[i]} & {groups[c] for c in vals[j]}, (i, j)
    for v in vals:  # 5 patients of the rare class for 5 folds: every fold holds every class
        assert {dataset["labels"][c] for c in v} == {0, 1, 2}


def test_without_groups_every_case_is_its_own_group_and_seed_matters(dataset):
    first = json.loads(Path(make_splits("778", n_folds=4, seed=0)).read_text())
    again = json.loads(Path(make_splits("778", n_folds=4, seed=0, force=True)).read_text())
    other = json.loads(Path(make_splits("778", n_folds=4, seed=7, force=True)).read_text())
    assert first == again and first != other
    for split in first:
        assert {dataset["labels"][c] for c in split["val"]} == {0, 1, 2}


def test_groups_csv_must_name_every_case(dataset, tmp_path):
    lines = Path(dataset["groups_csv"]).read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(MVExtError, match="no group for 2 training case\\(s\\): case_038, case_039"):
        make_splits("778", groups_csv=str(tmp_path / "short.csv"))
    (tmp_path / "unknown.csv").write_text("\n".join(lines + ["ghost,patient_1"]) + "\n")
    with pytest.raises(MVExtError, match="row 42: case 'ghost' is not a training case"):
        make_splits("778", groups_csv=str(tmp_path / "unknown.csv"))
    (tmp_path / "header.csv").write_text("case,patient\n")
    with pytest.raises(MVExtError, match="header 'case_id,group'"):
        make_splits("778", groups_csv=str(tmp_path / "header.csv"))
    assert not dataset["target"].exists()


def test_refuses_to_overwrite_without_force_and_warns_about_trained_folds(dataset, caplog):
    make_splits("778", groups_csv=dataset["groups_csv"])
    before = dataset["target"].read_text()
    with pytest.raises(MVExtError, match="exists; nnU-Net trains on it. Pass --force"):
        make_splits("778", seed=3)
    assert dataset["target"].read_text() == before
    trained = dataset["results"] / DATASET / "nnUNetTrainerFusionABAF__nnUNetPlans__3d_fullres" / "fold_2"
    trained.mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        make_splits("778", seed=3, force=True)
    backups = [f for f in os.listdir(dataset["target"].parent) if f.endswith(".bak")]
    assert len(backups) == 1 and Path(dataset["target"].parent / backups[0]).read_text() == before
    assert str(trained) in caplog.text and "trained on the previous splits" in caplog.text


def test_too_few_groups_and_cli(dataset, caplog):
    with pytest.raises(MVExtError, match="17 folds need at least 17 groups; the dataset has 16"):
        make_splits("778", groups_csv=dataset["groups_csv"], n_folds=17)
    with caplog.at_level(logging.WARNING):
        assert main(["make-splits", "778", "--groups", dataset["groups_csv"], "--folds", "8"]) == 0
    assert "has no validation case of class c" in caplog.text  # 5 patients of class c for 8 folds
    assert main(["make-splits", "778"]) == 2


def test_a_fold_count_above_every_class_is_refused_by_class_before_scikit_learn(dataset):
    # without groups each case is its own group; a 9, b 18, c 13 cases
    with pytest.raises(MVExtError, match="--folds 19: every class has fewer than 19 cases \\(a: 9, b: 18, c: 13\\); "
                                         ".* The largest fold count possible is 18; with --folds 9 or fewer every "
                                         "validation fold holds every class"):
        make_splits("778", n_folds=19)
    assert not dataset["target"].exists()


def test_a_fold_count_above_some_classes_is_named_in_one_warning(dataset, caplog, recwarn):
    with caplog.at_level(logging.WARNING):
        make_splits("778", n_folds=10)
    assert "--folds 10: class a has fewer cases than folds (a: 9), so some validation folds will lack it; with " \
           "--folds 9 or fewer every validation fold holds every class" in caplog.text
    assert not [w for w in recwarn if "least populated class" in str(w.message)]  # scikit-learn's, replaced
    with caplog.at_level(logging.WARNING):
        make_splits("778", groups_csv=dataset["groups_csv"], n_folds=6, force=True)
    assert "classes a, c have fewer patients (groups) than folds (a: 5, c: 5), so some validation folds will lack " \
           "them; with --folds 5 or fewer" in caplog.text


@pytest.mark.parametrize("folds", [1, 0, -3])
def test_fewer_than_two_folds_is_refused_as_a_fold_count(dataset, folds):
    with pytest.raises(MVExtError, match=f"--folds {folds}: a cross-validation needs at least 2 folds"):
        make_splits("778", groups_csv=dataset["groups_csv"], n_folds=folds)
    assert not dataset["target"].exists()
