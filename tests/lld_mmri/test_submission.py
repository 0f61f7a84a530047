"""export-lld: one entry per patient, lesion cases averaged by box volume, classes matched by name; refusals."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from nnunet_mvext.classification.prediction_table import write_case_predictions
from nnunet_mvext.cli import main
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.annotation import CLASS_NAMES
from nnunet_mvext.lld_mmri.submission import export_submission

# the CSV's columns in another order than the challenge's: a positional reading would be wrong
SHUFFLED = [CLASS_NAMES[i] for i in (6, 0, 5, 1, 4, 2, 3)]


def _one_hot_ish(k, n=7, high=0.7):
    p = np.full(n, (1 - high) / (n - 1))
    p[k] = high
    return p


@pytest.fixture()
def files(tmp_path):
    """MR1 has two lesion cases (volumes 300 and 100 mm^3), MR2 one; probabilities given in official order."""
    official = {"MR1_0": _one_hot_ish(3), "MR1_1": _one_hot_ish(6, high=0.9), "MR2_0": _one_hot_ish(4)}
    order = [CLASS_NAMES.index(n) for n in SHUFFLED]
    csv_path = str(tmp_path / "classification.csv")
    write_case_predictions(csv_path, list(official), np.stack([p[order] for p in official.values()]), SHUFFLED,
                           ["lesion"] * 3)
    lesions = tmp_path / "lesions.csv"
    lesions.write_text("case_id,patient,lesions,split,category,reference_phase,box_volume_mm3\n"
                       "MR1_0,MR1,0,unlabelled,-1,C+A,300.0\nMR1_1,MR1,1,unlabelled,-1,C+A,100.0\n"
                       "MR2_0,MR2,0,unlabelled,-1,C+A,50.0\n")
    return csv_path, str(lesions), official


def test_one_entry_per_patient_weighted_by_box_volume_in_the_official_order(files, tmp_path):
    csv_path, lesions, official = files
    out = export_submission(csv_path, str(tmp_path / "team.json"), lesions_csv=lesions)
    with open(out) as f:
        entries = json.load(f)
    assert [e["image_id"] for e in entries] == ["MR1", "MR2"]
    mr1 = (300 * official["MR1_0"] + 100 * official["MR1_1"]) / 400
    assert np.allclose(entries[0]["score"], mr1, atol=1e-5) and entries[0]["prediction"] == 3
    # the plain mean would decide class 6 (0.458 against 0.358 for class 3): the weights decide
    assert np.argmax((official["MR1_0"] + official["MR1_1"]) / 2) == 6 and np.argmax(mr1) == 3
    assert np.allclose(entries[1]["score"], official["MR2_0"], atol=1e-5) and entries[1]["prediction"] == 4
    assert all(isinstance(e["prediction"], int) and len(e["score"]) == 7 for e in entries)
    assert np.isclose(sum(entries[0]["score"]), 1, atol=1e-5)


def test_volume_weights_change_the_decision(tmp_path):
    """A small lesion sure of class 0 and a large one less sure of class 2: the large one decides."""
    csv_path = str(tmp_path / "c.csv")
    write_case_predictions(csv_path, ["P_0", "P_1"], np.stack([_one_hot_ish(0, high=0.9), _one_hot_ish(2, high=0.6)]),
                           list(CLASS_NAMES), ["lesion"] * 2)
    lesions = tmp_path / "lesions.csv"
    lesions.write_text("case_id,patient,box_volume_mm3\nP_0,P,10\nP_1,P,1000\n")
    out = export_submission(csv_path, str(tmp_path / "t.json"), lesions_csv=str(lesions))
    with open(out) as f:
        assert json.load(f)[0]["prediction"] == 2


@pytest.mark.parametrize("ids", [["MR1", "MR2"], ["MR-400851", "MR_7"], ["MR1_0", "MR-400851"]])
def test_without_lesions_every_case_is_a_patient(tmp_path, ids):
    """The resample alignment's ids are patient ids, which may hold '_' or '-'; only when every id ends in
    _<digits> are they crop cases."""
    csv_path = str(tmp_path / "c.csv")
    write_case_predictions(csv_path, ids, np.stack([_one_hot_ish(3), _one_hot_ish(5)]), list(CLASS_NAMES),
                           ["lesion"] * 2)
    with open(export_submission(csv_path, str(tmp_path / "t.json"))) as f:
        entries = json.load(f)
    assert [e["image_id"] for e in entries] == ids
    assert np.allclose(entries[1]["score"], _one_hot_ish(5), atol=1e-5)


def test_crop_case_ids_without_lesions_are_refused_naming_the_flag_and_the_file(files, tmp_path):
    """The issue's case: MR1_0, MR1_1, MR2_0 would be written as three 'patients' (two for MR1, none named MR1)."""
    csv_path, _, _ = files
    with pytest.raises(MVExtError, match=r"every case id has the crop alignment's form <patient>_<n> \(MR1_0, MR1_1, "
                                         r"MR2_0\).*Pass --lesions <dataset folder>/lesions.csv \(import-lld writes it "
                                         r"into the dataset folder"):
        export_submission(csv_path, str(tmp_path / "t.json"))
    assert not os.path.exists(tmp_path / "t.json")


def test_crop_case_ids_use_the_lesions_file_found_through_predict_cls_json(files, tmp_path, caplog):
    """predict-cls's marker names its input folder (the dataset's imagesTs); import-lld's lesions.csv is in the
    dataset folder above it: used, and said so; the same file without every case is refused."""
    caplog.set_level("INFO")
    csv_path, lesions, official = files
    dataset = tmp_path / "Dataset900_LLD"
    (dataset / "imagesTs").mkdir(parents=True)
    (tmp_path / "predict_cls.json").write_text(json.dumps({"input_folder": str(dataset / "imagesTs")}))
    with pytest.raises(MVExtError, match=r"Pass --lesions .*Dataset900_LLD/imagesTs, but .*Dataset900_LLD/"
                                         r"lesions.csv does not exist"):
        export_submission(csv_path, str(tmp_path / "t.json"))
    (dataset / "lesions.csv").write_text(Path(lesions).read_text())
    with open(export_submission(csv_path, str(tmp_path / "t.json"))) as f:
        entries = json.load(f)
    assert [e["image_id"] for e in entries] == ["MR1", "MR2"]
    assert np.allclose(entries[0]["score"], (300 * official["MR1_0"] + 100 * official["MR1_1"]) / 400, atol=1e-5)
    assert f"--lesions not given: using {dataset / 'lesions.csv'}" in caplog.text
    (dataset / "lesions.csv").write_text("case_id,patient,box_volume_mm3\nMR1_0,MR1,1\n")
    with pytest.raises(MVExtError, match=r"Pass --lesions .*lesions.csv \(found through .*predict_cls.json\) does "
                                         r"not list every case"):
        export_submission(csv_path, str(tmp_path / "t.json"), overwrite=True)


def test_a_probability_row_that_does_not_sum_to_one_is_refused_naming_its_row(tmp_path):
    csv_path = str(tmp_path / "c.csv")
    p = np.stack([_one_hot_ish(3), _one_hot_ish(5)])
    p[1, 0] += 0.01
    write_case_predictions(csv_path, ["MR1", "MR2"], p, list(CLASS_NAMES), ["lesion"] * 2)
    with pytest.raises(MVExtError, match=r"c.csv, row 3 \(case MR2\): its p_<class> sum to 1.010000, not 1 "
                                         r"\(allowed: within 0.001\); 1 row\(s\) in all"):
        export_submission(csv_path, str(tmp_path / "t.json"))
    assert not os.path.exists(tmp_path / "t.json")
    p[1, 0] -= 0.0099  # within the tolerance
    write_case_predictions(csv_path, ["MR1", "MR2"], p, list(CLASS_NAMES), ["lesion"] * 2)
    export_submission(csv_path, str(tmp_path / "t.json"))


def test_o_naming_a_directory_is_refused_without_advising_overwrite(files, tmp_path, caplog):
    csv_path, lesions, _ = files
    (tmp_path / "out").mkdir()
    with caplog.at_level(logging.ERROR, logger="nnunet_mvext"):
        for flags in ([], ["--overwrite"]):
            assert main(["export-lld", csv_path, "-o", str(tmp_path / "out"), "--lesions", lesions, *flags]) == 2
    assert "is a directory; give the submission file's path" in caplog.text and "--overwrite" not in caplog.text
    assert os.listdir(tmp_path / "out") == []


def test_refuses_classes_that_are_not_the_official_seven(tmp_path):
    csv_path = str(tmp_path / "c.csv")
    names = list(CLASS_NAMES[:6]) + ["HCC"]
    write_case_predictions(csv_path, ["a"], _one_hot_ish(0)[None], names, ["lesion"])
    with pytest.raises(MVExtError, match="missing: Hepatocellular_carcinoma; not an LLD-MMRI class: HCC"):
        export_submission(csv_path, str(tmp_path / "t.json"))
    assert not os.path.exists(tmp_path / "t.json")


def test_refuses_a_patient_with_unpredicted_lesion_cases_and_unknown_cases(files, tmp_path):
    csv_path, lesions, _ = files
    with open(lesions, "a") as f:
        f.write("MR2_1,MR2,1,unlabelled,-1,C+A,20.0\n")
    with pytest.raises(MVExtError, match="e.g. MR2: MR2_1"):
        export_submission(csv_path, str(tmp_path / "t.json"), lesions_csv=lesions)
    other = tmp_path / "other.csv"
    other.write_text("case_id,patient,box_volume_mm3\nMR1_0,MR1,1\n")
    with pytest.raises(MVExtError, match="2 case\\(s\\) are not in the lesions file: MR1_1, MR2_0"):
        export_submission(csv_path, str(tmp_path / "t.json"), lesions_csv=str(other))


def test_cli_keeps_an_existing_file_unless_overwrite(files, tmp_path, caplog):
    csv_path, lesions, _ = files
    out = str(tmp_path / "team.json")
    assert main(["export-lld", csv_path, "-o", out, "--lesions", lesions]) == 0
    with caplog.at_level(logging.ERROR, logger="nnunet_mvext"):
        assert main(["export-lld", csv_path, "-o", out]) == 2
    assert "exists; add --overwrite" in caplog.text
    assert main(["export-lld", csv_path, "-o", out, "--lesions", lesions, "--overwrite"]) == 0
    assert len([f for f in os.listdir(tmp_path) if f.startswith("team.json.") and f.endswith(".bak")]) == 1


def test_a_utf16_lesions_file_is_read(tmp_path):
    from nnunet_mvext.lld_mmri.submission import read_lesions_csv

    path = tmp_path / "lesions.csv"
    path.write_text("case_id,patient,box_volume_mm3\nMR1_0,MR1,12.5\n", encoding="utf-16")
    assert read_lesions_csv(str(path)) == {"MR1_0": ("MR1", 12.5)}
