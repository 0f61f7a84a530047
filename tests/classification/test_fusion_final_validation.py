"""The final validation of a fusion trainer (``perform_actual_validation``) run as ``nnUNetv2_train ... --val``:
nnU-Net then skips ``on_train_start``, and the missing phases of the validation cases must still be left out under
``missing_phases: zero``."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunet_mvext.trainers import fusion_trainers
from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF
from nnunet_mvext.trainers.multiview_trainers import nnUNetTrainerMultiViewABAF

PHASES = [[0], [1], [2]]


class _Cases:
    """nnU-Net's dataset stand-in: one lesion in each case's segmentation."""

    def __init__(self, folder, keys):
        self.identifiers = list(keys)

    def load_case(self, key):
        seg = np.zeros((1, 8, 8, 8), np.int16)
        seg[0, 2:5, 2:5, 2:5] = 1
        return np.ones((3, 8, 8, 8), np.float32), seg, None, {}


class _Pool:
    _pool: list = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerFusionABAF, nnUNetTrainerMultiViewABAF])
def test_val_without_on_train_start_leaves_the_recorded_missing_phases_out(monkeypatch, tmp_path, trainer_class):
    """The trainer as nnU-Net's ``--val`` leaves it: ``__init__`` ran (the record is read in
    ``check_before_nnunet_init``), ``on_train_start`` did not. Every validation case must be classified with its
    absent phases; case_2 misses C+A (phase 1), case_3 nothing, case_1 (a training case) T2WI."""
    seen = {}

    def classify(net, data, region, patch_size, mirror_axes, device, absent):
        seen[len(seen)] = absent
        return {"probabilities": np.array([0.5, 0.5]), "embedding": np.zeros(2), "beta": None,
                "aux_probabilities": None, "roi": region.source}

    monkeypatch.setattr(fusion_trainers, "classify_case", classify)
    monkeypatch.setattr(fusion_trainers.multiprocessing, "get_context",
                        lambda kind: SimpleNamespace(Pool=lambda n: _Pool()))
    monkeypatch.setattr(fusion_trainers, "check_workers_alive_and_busy", lambda *a, **k: False)
    finished = {}
    trainer = object.__new__(trainer_class)
    trainer.__dict__.update(
        case_info={"phase_channels": PHASES}, missing_record={"case_1": [0], "case_2": [1]}, absent={},
        network=torch.nn.Identity(), is_ddp=False, dataset_class=_Cases, preprocessed_dataset_folder=str(tmp_path),
        trainer_settings=SimpleNamespace(validation_mirroring=False), inference_allowed_mirroring_axes=None,
        output_folder=str(tmp_path), configuration_manager=SimpleNamespace(patch_size=[8, 8, 8]), device="cpu",
        lesion_label=1, fallback_label=None, log=[])
    trainer.__dict__.update(
        set_deep_supervision_enabled=lambda enabled: None, _unwrapped=lambda: SimpleNamespace(decoder=None),
        do_split=lambda: (["case_1"], ["case_2", "case_3"]), print_to_log_file=lambda *a, **k: trainer.log.append(a),
        _finish_validation=lambda folder, segmentation, local: finished.update(local))
    trainer.perform_actual_validation()
    assert sorted(finished) == ["case_2", "case_3"]
    assert seen == {0: [False, True, False], 1: None}
    assert any("1 validation case(s) miss a phase" in str(line) and "case_2" in str(line) for line in trainer.log)


def test_checkpoints_store_the_validation_cases_a_best_checkpoint_is_selected_on():
    """predict-cls -chk checkpoint_best_auc.pth names the input cases among them (test_inference)."""
    trainer = object.__new__(nnUNetTrainerFusionABAF)
    trainer.__dict__.update(case_info={"phase_channels": PHASES}, fold=1,
                            trainer_settings=SimpleNamespace(record=lambda: {}),
                            do_split=lambda: (["case_b", "case_a"], ["case_d", "case_c"]))
    extras = trainer.checkpoint_extras()
    assert extras["training_case_ids"] == ["case_a", "case_b"]
    assert extras["validation_case_ids"] == ["case_c", "case_d"]


def test_the_fold_csv_leaves_the_auxiliary_probabilities_of_absent_phases_empty(tmp_path):
    import csv

    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusion

    labels = {"a": 0, "b": 1, "c": 1}
    trainer = SimpleNamespace(
        dataset_json={"classification": {"class_names": {"0": "neg", "1": "pos"}, "labels": labels}},
        plans_manager=SimpleNamespace(dataset_name="Dataset1_X"), case_class_names=["neg", "pos"],
        _loaded_checkpoint=None, fold=0, phase_names=["t1", "t2", "t3"], print_to_log_file=lambda *a, **k: None,
        pretrained=None, case_info={"phase_channels": PHASES}, absent={"b": [False, True, False]})
    results = {c: {"probabilities": np.array([0.4, 0.6]), "roi": "lesion", "beta": np.full(3, 1 / 3),
                   "aux_probabilities": np.full((3, 2), 0.5), "embedding": np.zeros(4)} for c in labels}
    nnUNetTrainerFusion.write_classification_validation(trainer, str(tmp_path), results)
    with open(tmp_path / "classification.csv") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert rows["b"]["aux_t2_p_pos"] == "" and rows["b"]["aux_t1_p_pos"] == "0.500000"
    assert rows["a"]["aux_t2_p_pos"] == "0.500000"
