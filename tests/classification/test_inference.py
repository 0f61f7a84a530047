"""predict-cls in-process, without a trained model: what is refused before any model loads (the model folder holds
only its dataset.json, so a check that came after the checkpoints are read would end in 'Missing ...pth')."""

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunet_mvext.architectures.multiphase_fusion_net import NETWORK_VERSION
from nnunet_mvext.classification.evaluation import evaluate_classification
from nnunet_mvext.classification.fusion_setup import CASE_KEY
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


def test_the_csv_and_embeddings_an_output_replaces_are_kept_as_backups(tmp_path):
    results = {"case_010": {"probabilities": np.array([0.3, 0.7]), "embedding": np.zeros(4), "beta": None,
                            "aux_probabilities": None, "roi": "lesion"}}
    (tmp_path / "classification.csv").write_text("earlier")
    write_prediction_outputs(str(tmp_path), results, ["persistent", "washout"], [], None)
    backups = [f for f in os.listdir(tmp_path) if f.startswith("classification.csv.") and f.endswith(".bak")]
    assert len(backups) == 1 and (tmp_path / backups[0]).read_text() == "earlier"
    assert "washout" in (tmp_path / "classification.csv").read_text()
    write_prediction_outputs(str(tmp_path), results, ["persistent", "washout"], [], None)
    assert len([f for f in os.listdir(tmp_path) if f.startswith("classification_embeddings.npz.")]) == 1


# ---------------------------------------------------------------- a stand-in model
INFO = {"network_version": NETWORK_VERSION, "num_classes": 2, "class_names": ["persistent", "washout"],
        "fusion": "abaf", "phase_channels": [[0], [1]], "lesion_label": 1, "fallback_roi_label": None,
        "segmentation": True}


class _Network(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Identity()


class _Preprocessor:
    def __init__(self, verbose=False):
        pass

    def run_case(self, files, roi, plans_manager, configuration_manager, dataset_json):
        return np.zeros((2, 6, 6, 6), np.float32), None, {}


class _Predictor:
    """nnU-Net's predictor as predict-cls uses it, with a lesion in every case's segmentation."""

    def __init__(self, **kwargs):
        pass

    def initialize_from_trained_model_folder(self, folder, folds, checkpoint):
        self.dataset_json = json.loads((Path(folder) / "dataset.json").read_text())
        self.plans_manager = SimpleNamespace(plans={"plans_name": "nnUNetPlans"})
        self.configuration_manager = SimpleNamespace(configuration={CASE_KEY: INFO}, patch_size=[6, 6, 6],
                                                     preprocessor_class=_Preprocessor)
        self.network, self.list_of_parameters, self.allowed_mirroring_axes = _Network(), [{}], None

    def predict_logits_from_preprocessed_data(self, data):
        logits = torch.zeros((2, 6, 6, 6))
        logits[1, 2:4, 2:4, 2:4] = 5
        return logits


@pytest.fixture()
def stand_in(model, monkeypatch):
    """The model fixture with a fold-0 checkpoint (validation cases case_010, case_099), an nnU-Net predictor
    stand-in and real channel files (noise; case_011's second channel all zeros); ``absent`` collects what each
    case is classified with."""
    import SimpleITK as sitk
    from nnunetv2.inference import export_prediction, predict_from_raw_data

    import nnunet_mvext.classification.inference as inference

    images = Path(model["images"])
    for name in os.listdir(images):
        os.remove(images / name)
    rng = np.random.default_rng(0)
    for case in ("case_010", "case_011"):
        for c in (0, 1):
            zero = case == "case_011" and c == 1
            array = np.zeros((6, 6, 6), np.float32) if zero else rng.normal(50, 5, (6, 6, 6)).astype(np.float32)
            sitk.WriteImage(sitk.GetImageFromArray(array), str(images / f"{case}_{c:04d}.nii.gz"))
    fold = model["folder"] / "fold_0"
    fold.mkdir()
    stored = {"network_version": NETWORK_VERSION}
    stored.update(INFO)
    for name in ("checkpoint_final.pth", "checkpoint_best_auc.pth"):
        torch.save({CASE_KEY: {**stored, "missing_phases": "zero"}, "training_case_ids": ["case_001"],
                    "validation_case_ids": ["case_010", "case_099"]}, fold / name)
    absent = {}

    def classify(network, data, region, patch_size, mirror_axes, device, case_absent):
        absent[len(absent)] = case_absent
        return {"probabilities": np.array([0.4, 0.6]), "embedding": np.zeros(3), "beta": None,
                "aux_probabilities": np.array([[0.3, 0.7], [0.5, 0.5]])}

    def export(logits, properties, cm, pm, dj, output_file_truncated, save_probabilities):
        Path(output_file_truncated + ".nii.gz").write_text(f"segmentation {len(absent)}")

    monkeypatch.setattr(predict_from_raw_data, "nnUNetPredictor", _Predictor)
    monkeypatch.setattr(export_prediction, "export_prediction_from_logits", export)
    monkeypatch.setattr(inference, "classify_case", classify)
    return {**model, "absent": absent}


def test_an_all_zero_channel_reaches_the_fusion_as_a_missing_phase(stand_in, caplog):
    """No missing_phases.json anywhere: case_011's zero placeholder of 'delayed' is left out (zero policy)."""
    caplog.set_level("INFO")
    _predict(stand_in)
    assert stand_in["absent"] == {0: None, 1: [False, True]}
    assert "have all-zero channel files that no missing-phase record names (case_011: delayed)" in caplog.text
    # the auxiliary classifier of the missing phase saw no image: its cells are empty, not 0.5 / 0.5
    with open(stand_in["out"] / "classification.csv") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    aux = ["aux_arterial_p_persistent", "aux_arterial_p_washout", "aux_delayed_p_persistent", "aux_delayed_p_washout"]
    assert [rows["case_010"][k] for k in aux] == ["0.300000", "0.700000", "0.500000", "0.500000"]
    assert [rows["case_011"][k] for k in aux] == ["0.300000", "0.700000", "", ""]
    assert "auxiliary probabilities (aux_<phase>_p_<class>) left empty for the missing phases of 1 case(s) " \
           "(case_011)" in caplog.text


def test_best_auc_checkpoint_names_the_cases_it_was_selected_on_and_evaluate_cls_warns(stand_in, caplog, tmp_path):
    _predict(stand_in, checkpoint="checkpoint_best_auc.pth")
    assert "checkpoint_best_auc.pth of fold 0 was selected on its validation cases, 1 of which are input cases " \
           "(case_010)" in caplog.text
    out = stand_in["out"]
    with open(out / "classification.csv") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert {c: r["checkpoint_selected_on_these_cases"] for c, r in rows.items()} == {"case_010": "1", "case_011": "0"}
    assert {r["checkpoint"] for r in rows.values()} == {"checkpoint_best_auc.pth"}
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert marker["checkpoint_selected_on_cases"] == {"0": ["case_010"]}
    reference = tmp_path / "reference.csv"
    reference.write_text("case_id,class\ncase_010,washout\ncase_011,persistent\n")
    result = evaluate_classification(str(reference), str(out / "classification.csv"), str(tmp_path / "eval"),
                                     n_resamples=20)
    assert result["checkpoint_selected_on_cases"] == ["case_010"]
    assert any("1 of these 2 cases (case_010) were predicted with checkpoint_best_auc.pth, which was selected on "
               "them" in w for w in result["warnings"])
    # --chill leaving the selected case out: no warning of selection for the cases scored
    only_other = tmp_path / "reference_other.csv"
    only_other.write_text("case_id,class\ncase_011,persistent\n")
    result = evaluate_classification(str(only_other), str(out / "classification.csv"), str(tmp_path / "eval2"),
                                     n_resamples=20, chill=True)
    assert result["checkpoint_selected_on_cases"] == []
    assert not any("selected on" in w for w in result["warnings"])
    caplog.clear()
    _predict(stand_in, checkpoint="checkpoint_final.pth", overwrite=True)
    assert "was selected on" not in caplog.text
    with open(out / "classification.csv") as f:  # the columns of predict-cls's usual output stay as they were
        assert "checkpoint_selected_on_these_cases" not in next(csv.reader(f))


def test_overwrite_keeps_a_backup_of_every_file_it_replaces(stand_in, caplog):
    caplog.set_level("INFO")
    out = stand_in["out"]
    _predict(stand_in)
    earlier = {name: (out / name).read_bytes() for name in os.listdir(out)}
    assert {"case_010.nii.gz", "case_011.nii.gz", "classification.csv", OUTPUT_MARKER} <= set(earlier)
    (out / "case_010.nii.gz").write_text("my corrected segmentation")
    earlier["case_010.nii.gz"] = b"my corrected segmentation"
    caplog.clear()
    _predict(stand_in, overwrite=True)
    backups = {name.split(".20")[0]: name for name in os.listdir(out) if name.endswith(".bak")}
    assert set(backups) == set(earlier)
    for name, content in earlier.items():
        assert (out / backups[name]).read_bytes() == content, name
    assert f"kept {len(earlier)} replaced file(s) of the earlier output" in caplog.text
    assert "case_010.nii.gz" in caplog.text.split("replaced file(s)")[-1]


def test_a_roi_label_on_another_grid_is_refused_before_any_model_loads(tmp_path):
    import SimpleITK as sitk

    from nnunet_mvext.classification.inference import check_roi_grids

    image, label = tmp_path / "case_0000.nii.gz", tmp_path / "case.nii.gz"
    sitk.WriteImage(sitk.Image([10, 12, 14], sitk.sitkFloat32), str(image))
    sitk.WriteImage(sitk.Image([10, 12, 14], sitk.sitkUInt8), str(label))
    check_roi_grids({"case": str(label)}, {"case": [str(image)]})
    sitk.WriteImage(sitk.Image([10, 12, 15], sitk.sitkUInt8), str(label))
    with pytest.raises(MVExtError, match=r"case \(label \(10, 12, 15\), images \(10, 12, 14\)\)"):
        check_roi_grids({"case": str(label)}, {"case": [str(image)]})
