"""Folds trained before a default changed: a new fold of the same model folder and ``--c``/``--val`` on an old fold
are refused by name before any weight is loaded, and the message says which value brings the old setting back (an
absent key: 0 or false), instead of a missing-weight error from torch or advice that cannot work."""

import json

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_mvext.classification.fusion_setup import CASE_KEY
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.trainers import fusion_trainers

OLD = {"network_version": 3, "num_classes": 2, "fusion": "abaf", "phase_channels": [[0], [1]], "segmentation": True}
NEW = {**OLD, "classification_encoder_width": 1.0}
ABSENT_TO_ONE = "classification_encoder_width: absent (off: 0 or false) -> 1.0"


def test_a_new_fold_beside_folds_of_the_old_default_is_refused_naming_the_value_to_set(tmp_path, monkeypatch):
    base = tmp_path / "Dataset1_X" / "nnUNetTrainerFusionABAF__nnUNetPlans__3d_fullres"
    (base / "fold_0").mkdir(parents=True)
    (base / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    (base / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": {CASE_KEY: OLD}}}))
    monkeypatch.setattr(fusion_trainers, "nnUNet_results", str(tmp_path))
    plans = {"dataset_name": "Dataset1_X", "plans_name": "nnUNetPlans"}
    with pytest.raises(MVExtError) as refused:
        fusion_trainers._check_other_folds(plans, "3d_fullres", "nnUNetTrainerFusionABAF", 1, NEW)
    assert ABSENT_TO_ONE in str(refused.value) and "an absent key to 0 or false" in str(refused.value)
    fusion_trainers._check_other_folds(plans, "3d_fullres", "nnUNetTrainerFusionABAF", 1, OLD)  # same: accepted


@pytest.mark.parametrize("as_file", [True, False])
def test_continuing_a_fold_of_the_old_default_is_refused_before_its_weights_load(tmp_path, monkeypatch, as_file):
    trainer = object.__new__(fusion_trainers.nnUNetTrainerFusionABAF)
    trainer.case_info, trainer.device, trainer.configuration_name = NEW, torch.device("cpu"), "3d_fullres"
    checkpoint = {CASE_KEY: OLD, "network_weights": {}}
    loaded = []
    # nnU-Net's own loading (2.8: only a file name works there); this package's layers above it run for real
    monkeypatch.setattr(nnUNetTrainer, "load_checkpoint", lambda self, c: loaded.append(c))
    monkeypatch.setattr(fusion_trainers.nnUNetTrainerMV, "log_settings_changes", lambda self, recorded, name: None)
    path = tmp_path / "checkpoint_final.pth"
    torch.save(checkpoint, path)
    with pytest.raises(MVExtError, match="classification_encoder_width: absent \\(off: 0 or false\\) -> 1.0.*"
                                         "train the fold again without --c"):
        trainer.load_checkpoint(str(path) if as_file else checkpoint)
    assert loaded == []
    trainer.case_info = OLD
    trainer.load_checkpoint(str(path) if as_file else checkpoint)
    assert loaded == [str(path) if as_file else checkpoint]  # nnU-Net gets what nnUNetv2_train passed: the file name
