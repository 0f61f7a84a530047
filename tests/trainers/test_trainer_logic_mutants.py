"""The fusion trainers' own logic, checked on stand-in trainers (no nnU-Net run): each test fails for a plausible
wrong version of the code it names (the checkpoint selection, the AUC's moving average, case sampling, the class
weights as drawn, the phase kept fixed by the misalignment augmentation, missing phases in the per-epoch validation,
the checkpoints of a classification-only model)."""

import json
import pickle
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.channel_misalignment import ChannelMisalignmentTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.training.logging.nnunet_logger import MetaLogger
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from sklearn.metrics import roc_auc_score
from sklearn.utils.class_weight import compute_class_weight

import nnunet_mvext.trainers.fusion_trainers as fusion_trainers
from nnunet_mvext.classification.epoch_metrics import auc_moving_average, auc_selection_start
from nnunet_mvext.classification.training_data import (
    RESOLUTION,
    SAMPLING_EXPONENTS,
    CaseSamplingDataset,
    balanced_weights_as_drawn,
    misalignment_reference,
    with_phase_misalignment,
)
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF
from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

LLD_CHANNELS = {"0": "T2WI", "1": "DWI", "2": "In Phase", "3": "Out Phase", "4": "C-pre", "5": "C+A", "6": "C+V",
                "7": "C+Delay"}


def _trainer(tmp_path, **attributes):
    """A fusion trainer without nnU-Net's __init__, holding what the tested methods read."""
    trainer = object.__new__(nnUNetTrainerFusionABAF)
    log = []
    trainer.__dict__.update(
        absent={}, case_info={"phase_channels": [[0], [1], [2]], "segmentation": False},
        device=torch.device("cpu"), is_ddp=False, local_rank=0, fold=0, current_epoch=0, num_epochs=30,
        output_folder=str(tmp_path), phase_names=["p0", "p1", "p2"], _best_auc_ema=None, _cls_val_count=0,
        lesion_label=2, fallback_label=None, _loaded_checkpoint=None, log=log,
        print_to_log_file=lambda *args, **kwargs: log.append(" ".join(map(str, args))))
    trainer.logger = MetaLogger(str(tmp_path), False)
    for key in ("val_auc", "ema_val_auc", "val_macro_f1", "val_kappa"):
        trainer.logger.local_logger.my_fantastic_logging.setdefault(key, [])
    trainer.__dict__.update(attributes)
    return trainer


def _binary_predictions(auc_target: float, rng: np.random.Generator):
    """Labels (20,) and probabilities (20, 2) whose AUC is near ``auc_target`` (its exact value: roc_auc_score)."""
    y = np.array([0] * 10 + [1] * 10)
    score = y * 2 * (auc_target - 0.5) * 3 + rng.normal(size=20)
    p1 = 1 / (1 + np.exp(-score))
    return y, np.stack([1 - p1, p1], 1)


def _run_epochs(trainer, targets, monkeypatch, seed=0):
    """The real on_validation_epoch_end and on_epoch_end per epoch (nnU-Net's parts switched off): returns the AUCs
    the metric saw and the epochs at which checkpoint_best_auc.pth was written."""
    rng = np.random.default_rng(seed)
    saved, aucs = [], []
    monkeypatch.setattr(nnUNetTrainer, "on_validation_epoch_end", lambda self, outputs: None)
    monkeypatch.setattr(nnUNetTrainer, "on_epoch_end", lambda self: setattr(self, "current_epoch",
                                                                            self.current_epoch + 1))
    monkeypatch.setattr(fusion_trainers, "plot_auc_curve", lambda *args: None)
    trainer.save_checkpoint = lambda filename: saved.append((trainer.current_epoch, filename.split("/")[-1]))
    for target in targets:
        y, p = _binary_predictions(target, rng)
        aucs.append(roc_auc_score(y, p[:, 1]))
        trainer.classification_validation = lambda y=y, p=p: ([f"c{i}" for i in range(len(y))], y, p, None)
        trainer.on_validation_epoch_end([])
        trainer.on_epoch_end()
    return aucs, saved


def test_the_moving_average_is_the_bias_corrected_mean_weighting_recent_epochs_most():
    """m_t = sum d^(t-i) a_i / sum d^(t-i), d = 0.9, epochs without an AUC left out."""
    expected = (0.81 * 0.6 + 0.9 * 0.8 + 1.0 * 0.7) / (0.81 + 0.9 + 1.0)
    assert auc_moving_average([0.6, None, 0.8, 0.7]) == pytest.approx(expected)
    assert auc_moving_average([0.9]) == pytest.approx(0.9)
    assert auc_moving_average([None, None]) is None
    assert auc_moving_average([0.5, 1.0]) == pytest.approx((0.9 * 0.5 + 1.0) / 1.9)  # the recent epoch weighs more
    assert auc_selection_start(1000) == 9 and auc_selection_start(3) == 2 and auc_selection_start(1) == 0


def test_the_trainer_logs_the_moving_average_of_its_own_per_epoch_aucs(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    aucs, _ = _run_epochs(trainer, [0.55, 0.7, 0.8, 0.65], monkeypatch)
    assert trainer.logger.get_value("val_auc", step=None) == pytest.approx(aucs)
    logged = trainer.logger.get_value("ema_val_auc", step=None)
    for t in range(4):
        weights = 0.9 ** np.arange(t, -1, -1)
        assert logged[t] == pytest.approx(float(np.dot(weights, aucs[: t + 1]) / weights.sum()))


def test_the_best_auc_checkpoint_keeps_the_highest_moving_average_from_the_tenth_epoch_on(tmp_path, monkeypatch):
    """AUCs rise, then fall: the checkpoint is written at every new maximum of the moving average from epoch 9 on,
    never when it falls, and the best value kept is the maximum."""
    trainer = _trainer(tmp_path)
    targets = [0.5 + 0.02 * e for e in range(20)] + [0.9 - 0.03 * e for e in range(10)]
    _, saved = _run_epochs(trainer, targets, monkeypatch)
    ema = trainer.logger.get_value("ema_val_auc", step=None)
    expected = [e for e in range(9, 30) if ema[e] > max(ema[9:e], default=-1)]
    assert [e for e, _ in saved] == expected and {name for _, name in saved} == {"checkpoint_best_auc.pth"}
    assert trainer._best_auc_ema == pytest.approx(max(ema[9:]))
    assert expected[-1] > 9  # the rising AUCs moved the checkpoint on


def test_an_early_lucky_auc_does_not_pin_the_best_auc_checkpoint(tmp_path, monkeypatch):
    """Epoch 0's AUC 1.0 (a few cases, chance), then 0.6 rising to 0.85: the checkpoint follows the training. The
    release before started the average at epoch 0's value and selected from epoch 0: epoch 0 stayed the best."""
    trainer = _trainer(tmp_path, num_epochs=25)
    targets = [1.2] + [0.6 + 0.01 * e for e in range(24)]
    aucs, saved = _run_epochs(trainer, targets, monkeypatch)
    assert aucs[0] == 1.0
    assert saved and min(e for e, _ in saved) == 9 and max(e for e, _ in saved) > 15


def test_a_short_training_selects_at_its_last_epoch(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, num_epochs=3)
    _, saved = _run_epochs(trainer, [0.9, 0.6, 0.7], monkeypatch)
    assert saved == [(2, "checkpoint_best_auc.pth")]


@pytest.mark.parametrize("sampling", ["uniform", "sqrt_balanced", "balanced"])
def test_case_sampling_draws_each_class_as_often_as_its_setting_asks(sampling):
    """Classes of 12, 3 and 1 cases: the share of the identifiers nnU-Net's loader draws from is proportional to
    n_k^(1 - a) (uniform: to n_k; balanced: equal; sqrt_balanced: to sqrt(n_k)), within 1 / (2 RESOLUTION)."""
    counts = {0: 12, 1: 3, 2: 1}
    labels = {f"k{k}_{i}": k for k, n in counts.items() for i in range(n)}
    dataset = CaseSamplingDataset(SimpleNamespace(identifiers=list(labels)), labels, SAMPLING_EXPONENTS[sampling])
    drawn = Counter(labels[k] for k in dataset.identifiers)
    a = SAMPLING_EXPONENTS[sampling]
    intended = np.array([counts[k] ** (1 - a) for k in range(3)])
    share = np.array([drawn[k] for k in range(3)]) / len(dataset.identifiers)
    assert share == pytest.approx(intended / intended.sum(), abs=1 / (2 * RESOLUTION))
    assert set(dataset.identifiers) == set(labels)  # every case still drawn


def _drawn_balanced_weights(labels: dict, loss_cases: list, sampling: str, num_classes: int) -> np.ndarray:
    """The reference: list the training cases as CaseSamplingDataset does, keep those entering the loss, and weigh
    the classes n / (K' n_k) over that list (scikit-learn)."""
    drawn = CaseSamplingDataset(SimpleNamespace(identifiers=list(labels)), labels, SAMPLING_EXPONENTS[sampling])
    y = [labels[k] for k in drawn.identifiers if k in loss_cases]
    weights = np.ones(num_classes)
    present = np.unique(y)
    weights[present] = compute_class_weight("balanced", classes=present, y=y)
    return weights


def test_balanced_class_weights_weigh_the_loss_cases_as_drawn_when_lesion_free_cases_exist():
    """Class b has three training cases, two of them lesion-free: case sampling lists b's cases by b's three cases,
    so its one loss case is drawn as often as each case of a. The release before computed the multiplicities from
    the loss cases only (b: one case, drawn three times as often), giving weights 1, 1, 1."""
    labels = {"a1": 0, "a2": 0, "a3": 0, "b1": 1, "b2": 1, "b3": 1, "c1": 2}
    loss = ["a1", "a2", "a3", "b1", "c1"]
    weights = balanced_weights_as_drawn(labels, loss, SAMPLING_EXPONENTS["balanced"], 3)
    assert weights == pytest.approx(_drawn_balanced_weights(labels, loss, "balanced", 3))
    assert weights == pytest.approx([56 / 72, 56 / 24, 56 / 72])
    assert balanced_weights_as_drawn(labels, loss, 0.0, 3) == pytest.approx([5 / 9, 5 / 3, 5 / 3])


def test_the_trainer_weighs_the_classes_as_drawn(tmp_path, monkeypatch):
    """on_train_start with case_sampling balanced and class_weighting balanced, lesion-free cases in class b."""
    lesion = np.zeros((3, 4))
    locations = {"a1": {2: lesion}, "a2": {2: lesion}, "a3": {2: lesion}, "b1": {2: lesion}, "b2": {}, "b3": {},
                 "c1": {2: lesion}, "v1": {2: lesion}}
    for case, loc in locations.items():
        with open(tmp_path / f"{case}.pkl", "wb") as f:
            pickle.dump({"class_locations": loc}, f)
    labels = {"a1": 0, "a2": 0, "a3": 0, "b1": 1, "b2": 1, "b3": 1, "c1": 2, "v1": 1}
    trainer = _trainer(
        tmp_path, do_split=lambda: (["a1", "a2", "a3", "b1", "b2", "b3", "c1"], ["v1"]),
        preprocessed_dataset_folder=str(tmp_path), plans_manager=SimpleNamespace(dataset_name="Dataset1_X"),
        dataset_json={"classification": {"class_names": {"0": "a", "1": "b", "2": "c"}, "labels": labels}},
        case_class_names=["a", "b", "c"], missing_record={}, network=None, dataset_class=lambda folder, keys: None,
        trainer_settings=SimpleNamespace(class_weighting="balanced", case_sampling="balanced"))
    monkeypatch.setattr(nnUNetTrainerMV, "on_train_start", lambda self: None, raising=False)
    monkeypatch.setattr(fusion_trainers, "log_fusion_memory", lambda trainer, network: None)
    trainer.on_train_start()
    tr = {k: v for k, v in labels.items() if k != "v1"}
    expected = _drawn_balanced_weights(tr, ["a1", "a2", "a3", "b1", "c1"], "balanced", 3)
    assert trainer.class_weights.tolist() == pytest.approx(expected.tolist())


def _shifted_channels(transforms, channels: int, draws: int = 40) -> set:
    """The channels the transforms ever changed over ``draws`` samples of distinct random channels."""
    torch.manual_seed(0)
    np.random.seed(0)
    changed = set()
    for _ in range(draws):
        image = torch.rand(channels, 12, 12, 12)
        out = transforms(image=image.clone(), segmentation=torch.zeros(1, 12, 12, 12))["image"]
        changed |= {c for c in range(channels) if not torch.equal(out[c], image[c])}
    return changed


@pytest.mark.parametrize("fixed", [0, 2])
def test_the_misalignment_augmentation_shifts_every_phase_but_the_fixed_one(fixed):
    groups = [[0], [1, 2], [3]]
    transforms = with_phase_misalignment(ComposeTransforms([]), groups, 2, probability=1.0, fixed_phase=fixed)
    assert _shifted_channels(transforms, 4) == {c for g, group in enumerate(groups) if g != fixed for c in group}
    assert len(with_phase_misalignment(ComposeTransforms([]), groups, 0).transforms) == 0


def test_the_phase_kept_fixed_is_the_imports_reference_phase(tmp_path, monkeypatch):
    """An LLD-MMRI import (channels in the release's phase order, T2WI first) records its reference phase C+A: the
    trainer keeps C+A fixed and shifts T2WI; a dataset without an import record keeps its first phase fixed."""
    from nnunetv2 import paths

    assert misalignment_reference([[c] for c in range(8)], LLD_CHANNELS, "C+A") == 5
    assert misalignment_reference([[0, 1], [4, 5]], LLD_CHANNELS, "C+A") == 1
    assert misalignment_reference([[c] for c in range(8)], LLD_CHANNELS, None) == 0
    assert misalignment_reference([[c] for c in range(4)], LLD_CHANNELS, "C+A") == 0  # C+A not among the phases

    (tmp_path / "Dataset5_LLD").mkdir()
    (tmp_path / "Dataset5_LLD" / "import_report.json").write_text(json.dumps({"reference_phase": "C+A"}))
    monkeypatch.setattr(paths, "nnUNet_raw", str(tmp_path))
    groups = [[c] for c in range(8)]
    # Dataset7: no raw folder on the training machine, but dataset.json (copied to the preprocessed folder by
    # nnU-Net) holds the import's reference phase
    for dataset, kept, stored in (("Dataset5_LLD", 5, {}), ("Dataset6_Other", 0, {}),
                                  ("Dataset7_NoRaw", 5, {"reference_phase": "C+A"})):
        trainer = _trainer(tmp_path, per_phase_augmentation=False, case_info={"phase_channels": groups},
                           trainer_settings=SimpleNamespace(phase_misalignment_voxels=2),
                           dataset_json={"channel_names": LLD_CHANNELS, **stored},
                           plans_manager=SimpleNamespace(dataset_name=dataset))
        transforms = trainer.get_training_transforms(
            (16, 16, 16), rotation_for_DA=(-0.5, 0.5), deep_supervision_scales=None, mirror_axes=(0, 1, 2),
            do_dummy_2d_data_aug=False)
        shifted = [c for t in transforms.transforms if isinstance(t, ChannelMisalignmentTransform)
                   for c in t.im_channels_2_misalign]
        assert sorted(shifted) == [c for c in range(8) if c != kept]
        assert f"phase {LLD_CHANNELS[str(kept)]} stays fixed" in trainer.log[-1]


class _PresentPhaseReader(torch.nn.Module):
    """logit_k = -10 (v - k)^2, v the mean over the lesion of the channels of the phases marked present: a case
    whose missing phase (a zero placeholder) is read as present is misclassified."""

    decoder = None

    def forward_with_classification(self, x, roi, absent_phases=None):
        present = torch.ones(x.shape[:2], dtype=torch.bool) if absent_phases is None else ~absent_phases
        inside = (x * roi).flatten(2).sum(2) / roi.flatten(1).sum(1, keepdim=True)              # (B, C)
        v = (inside * present).sum(1) / present.sum(1)
        logits = -10 * (v[:, None] - torch.arange(3, dtype=x.dtype)[None]) ** 2
        return None, {"logits": logits, "beta": None, "aux_logits": None, "embedding": logits}


class _Cases:
    def __init__(self, cases: dict):
        self.cases, self.identifiers = cases, list(cases)

    def load_case(self, key):
        data, seg = self.cases[key]
        return data, seg, None, {}


def test_the_per_epoch_validation_leaves_out_the_missing_phases_of_each_case(tmp_path, monkeypatch):
    """Every case's lesion reads its class in every phase it has; two cases miss a phase (zero placeholder). The
    per-epoch macro AUC and macro-F1 are 1 only if the validation passes each case's missing phases to the network."""
    labels = {"a": 0, "b": 1, "c": 2, "d": 1, "e": 2, "f": 0}
    absent = {"d": [False, True, False], "e": [True, False, False]}
    cases = {}
    for k, label in labels.items():
        x = np.zeros((3, 16, 16, 16), np.float32)
        seg = np.zeros((1, 16, 16, 16), np.int16)
        seg[0, 5:9, 6:10, 4:9] = 2
        for phase in range(3):
            if not absent.get(k, [False] * 3)[phase]:
                x[phase][seg[0] == 2] = label
        cases[k] = (x, seg)
    trainer = _trainer(tmp_path, network=_PresentPhaseReader(), case_labels=labels,
                       case_class_names=["c0", "c1", "c2"], _cls_val_dataset=_Cases(cases),
                       configuration_manager=SimpleNamespace(patch_size=(12, 12, 12)), absent=absent)
    keys, y, probs, _ = trainer.classification_validation()
    assert probs.argmax(1).tolist() == y.tolist() == [labels[k] for k in keys]
    monkeypatch.setattr(nnUNetTrainer, "on_validation_epoch_end", lambda self, outputs: None)
    trainer.on_validation_epoch_end([])
    assert trainer.logger.get_value("val_macro_f1", step=-1) == 1.0


@pytest.mark.parametrize("segmentation", [False, True])
def test_a_classification_only_model_writes_and_loads_no_pseudo_dice_checkpoint(tmp_path, monkeypatch, segmentation):
    """Without a decoder nnU-Net's EMA pseudo Dice is NaN, so its checkpoint_best.pth would be epoch 0's weights (and
    --c before the first checkpoint_latest.pth would resume from them): it is not written, and loading one (an
    earlier release's) is refused. A model with a decoder keeps nnU-Net's checkpoint_best.pth."""
    written = []
    monkeypatch.setattr(nnUNetTrainerMV, "save_checkpoint", lambda self, filename: written.append(filename))
    trainer = _trainer(tmp_path, case_info={"phase_channels": [[0], [1]], "segmentation": segmentation})
    trainer.save_checkpoint(str(tmp_path / "checkpoint_best.pth"))
    trainer.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    trainer.save_checkpoint(str(tmp_path / "checkpoint_best_auc.pth"))
    assert [f.split("/")[-1] for f in written] == (["checkpoint_best.pth"] if segmentation else []) + [
        "checkpoint_latest.pth", "checkpoint_best_auc.pth"]
    loaded = []
    monkeypatch.setattr(nnUNetTrainerMV, "load_checkpoint", lambda self, name: loaded.append(name))
    if segmentation:
        trainer.load_checkpoint(str(tmp_path / "checkpoint_best.pth"))
        assert trainer._loaded_checkpoint == "checkpoint_best.pth"
    else:
        with pytest.raises(MVExtError, match="checkpoint_best.pth: a classification-only model.*epoch 0"):
            trainer.load_checkpoint(str(tmp_path / "checkpoint_best.pth"))
        assert loaded == []


def test_a_resumed_training_validates_its_own_final_weights(tmp_path, monkeypatch):
    """--c resumes from checkpoint_best.pth (nnU-Net's choice when there is no checkpoint_latest.pth) and the training
    runs on: the final validation's provenance names the final weights of this run, not the checkpoint it resumed
    from (which would also mark the metrics as selected on the validation cases)."""
    monkeypatch.setattr(nnUNetTrainerMV, "load_checkpoint", lambda self, name: None)
    monkeypatch.setattr(nnUNetTrainer, "on_train_end", lambda self: None)
    trainer = _trainer(tmp_path, case_info={"phase_channels": [[0], [1]], "segmentation": True})
    trainer.load_checkpoint(str(tmp_path / "checkpoint_best.pth"))
    assert trainer._loaded_checkpoint == "checkpoint_best.pth"
    trainer.on_train_end()
    assert trainer._loaded_checkpoint is None
