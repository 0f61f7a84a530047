"""predict-cls in-process, without a trained model: what is refused before any model loads (the model folder holds
only its dataset.json, so a check that came after the checkpoints are read would end in 'Missing ...pth')."""

import csv
import json
import os

import numpy as np
import pytest

from nnunet_mvext.classification.inference import (
    OUTPUT_MARKER,
    THRESHOLD_FILE,
    predict_classification,
    write_prediction_outputs,
)
from nnunet_mvext.cli import main
from nnunet_mvext.errors import MVExtError

DATASET = "Dataset778_Predict"
TRAINER = "nnUNetTrainerFusionABAF"


@pytest.fixture()
def model(tmp_path, monkeypatch):
    """An nnU-Net results folder with a model folder that has a dataset.json and no checkpoint; one input case."""
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    folder = tmp_path / "nnUNet_results" / DATASET / f"{TRAINER}__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "arterial", "1": "delayed"}, "file_ending": ".nii.gz",
        "labels": {"background": 0, "lesion": 1},
        "classification": {"class_names": {"0": "persistent", "1": "washout"}, "labels": {}}}))
    images = tmp_path / "imagesTs"
    images.mkdir()
    for c in (0, 1):
        (images / f"case_010_{c:04d}.nii.gz").write_bytes(b"")
    return {"folder": folder, "images": str(images), "out": tmp_path / "pred"}


def _predict(model, **kwargs):
    return predict_classification(model["images"], str(model["out"]), "778", "3d_fullres", ["0"], TRAINER,
                                  device="cpu", **kwargs)


@pytest.mark.parametrize("content, message", [
    ({"threshold": 1.5}, "'threshold' in .*classification_threshold.json is 1.5; allowed: .*a number in \\[0, 1\\]"),
    ({"threshold": -0.1}, "is -0.1; allowed"),
    ({"threshold": "0.4"}, "is '0.4'; allowed"),
    ({"threshold": None}, "is None; allowed"),
    ({"positive_class": "washout"}, "classification_threshold.json has no 'threshold' key"),
    ([0.4], "classification_threshold.json has no 'threshold' key"),
])
def test_a_bad_stored_threshold_is_refused_naming_the_file_before_any_model_loads(model, content, message):
    (model["folder"] / THRESHOLD_FILE).write_text(json.dumps(content))
    with pytest.raises(MVExtError, match=message):
        _predict(model, threshold="stored")
    assert not model["out"].exists()


@pytest.mark.parametrize("stored", [0.0, 1.0, 0.53])
def test_a_stored_threshold_in_0_1_is_accepted_as_the_flag_is(model, stored, caplog):
    caplog.set_level("INFO")
    (model["folder"] / THRESHOLD_FILE).write_text(json.dumps({"threshold": stored, "chosen_on": "folds [0]"}))
    with pytest.raises(MVExtError, match="Missing .*fold_0/checkpoint_final.pth"):  # got as far as the checkpoints
        _predict(model, threshold="stored")
    assert f"applying the stored threshold {stored}" in caplog.text
    with pytest.raises(MVExtError, match="Missing .*checkpoint_final.pth"):
        _predict(model, threshold=str(stored))


def test_the_threshold_flag_is_validated_before_any_model_loads(model, caplog):
    for bad in ("1.5", "-1", "nan", "high"):
        with pytest.raises(MVExtError, match="allowed are argmax, stored or a number in \\[0, 1\\]|allowed: argmax"):
            _predict(model, threshold=bad)
    assert main(["predict-cls", "-i", model["images"], "-o", str(model["out"]), "-d", "778", "-c", "3d_fullres",
                 "-f", "0", "-device", "cpu", "--threshold", "stored"]) == 2
    assert "classification_threshold.json does not exist" in caplog.text and not model["out"].exists()


@pytest.mark.parametrize("threshold, expected", [(None, "washout"), (0.53, "persistent"), (0.5, "washout")])
def test_the_console_line_says_what_classification_csv_says(tmp_path, caplog, threshold, expected):
    """The issue's case: p_washout 0.52 is washout by arg-max, persistent with --threshold 0.53."""
    caplog.set_level("INFO")
    results = {"case_010": {"probabilities": np.array([0.48, 0.52]), "embedding": np.zeros(4), "beta": None,
                            "aux_probabilities": None, "roi": "lesion"}}
    path = write_prediction_outputs(str(tmp_path), results, ["persistent", "washout"], ["a", "b"], threshold)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["predicted_class"] == expected
    assert f"case_010: {expected} (" in caplog.text


def test_a_folder_that_is_not_a_predict_cls_output_is_refused_before_any_model_loads(model, caplog):
    out = model["out"]
    out.mkdir()
    (out / "dataset.json").write_text('{"mine": 1}')
    (out / "case_010.nii.gz").write_bytes(b"my segmentation")
    with pytest.raises(MVExtError, match="is not empty \\(2 entries: case_010.nii.gz, dataset.json\\) and is not an "
                                         "output of predict-cls .*pass --force"):
        _predict(model)
    with pytest.raises(MVExtError, match="is not an output of predict-cls"):  # --overwrite is not enough
        _predict(model, overwrite=True)
    assert sorted(os.listdir(out)) == ["case_010.nii.gz", "dataset.json"]
    assert (out / "dataset.json").read_text() == '{"mine": 1}'
    with pytest.raises(MVExtError, match="Missing .*checkpoint_final.pth"):  # --force: on to the model
        _predict(model, force=True)
    (out / "dataset.json").unlink()
    (out / "case_010.nii.gz").unlink()
    with pytest.raises(MVExtError, match="Missing .*checkpoint_final.pth"):  # an empty folder is fine
        _predict(model)


def test_o_naming_a_file_is_refused_before_any_model_loads(model):
    model["out"].write_text("notes")
    for force in (False, True):
        with pytest.raises(MVExtError, match="-o .*pred is a file, not a folder"):
            _predict(model, force=force)
    assert model["out"].read_text() == "notes"


def test_an_earlier_output_is_recognised_by_its_marker_and_its_csv_needs_overwrite_or_force(model):
    out = model["out"]
    out.mkdir()
    (out / OUTPUT_MARKER).write_text("{}")
    (out / "dataset.json").write_text("{}")
    with pytest.raises(MVExtError, match="Missing .*checkpoint_final.pth"):  # an earlier output: written into
        _predict(model)
    (out / "classification.csv").write_text("case_id,predicted_class,p_persistent,p_washout\n")
    with pytest.raises(MVExtError, match="classification.csv already exists; refusing to overwrite it"):
        _predict(model)
    for flags in ({"overwrite": True}, {"force": True}):
        with pytest.raises(MVExtError, match="Missing .*checkpoint_final.pth"):
            _predict(model, **flags)


def test_force_keeps_a_backup_of_the_csv_and_embeddings_it_replaces(tmp_path):
    results = {"case_010": {"probabilities": np.array([0.3, 0.7]), "embedding": np.zeros(4), "beta": None,
                            "aux_probabilities": None, "roi": "lesion"}}
    (tmp_path / "classification.csv").write_text("earlier")
    write_prediction_outputs(str(tmp_path), results, ["persistent", "washout"], [], None, force=True)
    backups = [f for f in os.listdir(tmp_path) if f.startswith("classification.csv.") and f.endswith(".bak")]
    assert len(backups) == 1 and (tmp_path / backups[0]).read_text() == "earlier"
    assert "washout" in (tmp_path / "classification.csv").read_text()
    write_prediction_outputs(str(tmp_path), results, ["persistent", "washout"], [], None, force=True)
    assert len([f for f in os.listdir(tmp_path) if f.startswith("classification_embeddings.npz.")]) == 1
