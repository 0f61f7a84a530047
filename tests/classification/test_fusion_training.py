"""What the fusion trainers change in training, checked on nnU-Net's own transforms and on cached crops.

The crops are made in memory (no nnU-Net run): the trainers' data pipeline is nnU-Net's, tested elsewhere end to end;
here the network, the heads and the augmentation are what is tested.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from sklearn.metrics import roc_auc_score

from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet
from nnunet_mvext.classification.training_data import (
    PHASE_SYNCHRONISED,
    phase_consistent,
)

PATCH = (16, 16, 16)


def _training_transforms(consistent: bool):
    transforms = nnUNetTrainer.get_training_transforms(
        PATCH, rotation_for_DA=(-0.5, 0.5), deep_supervision_scales=None, mirror_axes=(0, 1, 2),
        do_dummy_2d_data_aug=False)
    if consistent:
        transforms = phase_consistent(transforms)
    for t in transforms.transforms:  # noise stays independent per phase by design: switch it off for this check
        if type(getattr(t, "transform", None)).__name__ == "GaussianNoiseTransform":
            t.apply_probability = 0.0
        elif hasattr(t, "apply_probability"):
            t.apply_probability = 1.0  # every intensity transform on every sample
    return transforms


@pytest.mark.parametrize("consistent", [True, False])
def test_identical_phases_stay_identical_after_the_training_transforms(consistent):
    torch.manual_seed(0)
    transforms = _training_transforms(consistent)
    differences = []
    for _ in range(8):
        phase = torch.rand(1, *PATCH) * 3
        out = transforms(image=phase.repeat(3, 1, 1, 1), segmentation=torch.zeros(1, *PATCH, dtype=torch.int16))
        image = out["image"]
        differences.append(float((image - image[:1]).abs().max()))
    if consistent:
        assert max(differences) < 1e-5
    else:  # nnU-Net's own transforms draw per channel: the check above would catch it
        assert max(differences) > 1e-2


def _tiny_net(fusion: str, phases: int = 3, classes: int = 2, patch_pooling: bool = False) -> MultiPhaseFusionNet:
    kw = dict(n_stages=3, features_per_stage=[8, 16, 32], conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * 3,
              strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1],
              conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, dropout_op=None,
              dropout_op_kwargs=None, nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    net = MultiPhaseFusionNet("PlainConvUNet", kw, phases, 3, classes, fusion, segmentation=False,
                              patch_pooling=patch_pooling)
    net.apply(net.initialize)
    return net


def _crops(n: int, rng: np.random.Generator, noise_phase: bool):
    """Lesion crops (N, 3, 16^3) with masks. Class 1: the lesion enhances in phases 0 and 1 (each alone is enough).
    ``noise_phase``: phase 2 is pure noise; otherwise phase 2 repeats phase 1's enhancement."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in PATCH], indexing="ij")).astype(np.float32)
    x = np.zeros((n, 3, *PATCH), np.float32)
    masks = np.zeros((n, 1, *PATCH), np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        centre = 8 + rng.uniform(-2, 2, 3)
        lesion = (((grid - centre[:, None, None, None]) ** 2).sum(0) <= rng.uniform(9, 16))
        masks[i, 0] = lesion
        contrast = (1.0 if y[i] else 0.3) * rng.uniform(0.8, 1.2)
        for p in range(3):
            x[i, p] = rng.normal(0, 0.3, PATCH)
            if p < 2 or not noise_phase:
                x[i, p][lesion] += contrast
    return torch.from_numpy(x), torch.from_numpy(masks), torch.from_numpy(y).long()


def _train(net, draw, steps: int, lr: float):
    """Adam on fresh crops every step (``draw()`` -> x, masks, y): nothing to memorise, not even noise."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        x, m, y = draw()
        _, out = net.forward_with_classification(x, m)
        loss = net.head.loss(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    return net


def test_abaf_turns_away_from_a_pure_noise_phase():
    """Mean beta of the noise phase after 60 steps (network version 3, lesion-against-ring embedding): 0.236, 0.112
    and 0.234 for torch seeds 0, 1 and 2 (uniform: 0.333). With version 2's lesion-mean embedding seed 0 gave 0.078
    after 30 steps, seeds 1 and 2 0.133 and 0.451. ABAF's gates see all phases (alpha_p = sigmoid(W_p [f_1; ...;
    f_P])), so the noise branch's auxiliary classifier can read the class through its gate, and then nothing pushes
    its beta further down; the test asserts only that it falls clearly below uniform."""
    rng = np.random.default_rng(0)
    x, m, _ = _crops(64, rng, noise_phase=True)
    torch.manual_seed(0)
    net = _train(_tiny_net("abaf"), lambda: _crops(8, rng, noise_phase=True), steps=60, lr=1e-2)
    with torch.no_grad():
        _, out = net.forward_with_classification(x, m)
    beta = out["beta"].mean(0)
    assert float(beta[2]) < 0.3, beta


def test_a_short_training_beats_chance_on_held_out_crops():
    """Held-out crops never seen in training. Measured held-out AUC 1.00 for torch seeds 0, 1 and 2 (30 steps);
    the threshold 0.8 leaves room for platform differences, not for a broken model (chance is 0.5)."""
    rng = np.random.default_rng(1)
    xt, mt, yt = _crops(64, rng, noise_phase=False)
    torch.manual_seed(0)
    net = _train(_tiny_net("abaf"), lambda: _crops(8, rng, noise_phase=False), steps=30, lr=3e-3)
    with torch.no_grad():
        _, out = net.forward_with_classification(xt, mt)
    auc = roc_auc_score(yt.numpy(), torch.softmax(out["logits"], 1)[:, 1].numpy())
    assert auc > 0.8


def test_a_3d_fusion_trainer_refuses_views_it_would_ignore():
    from nnunet_mvext.errors import MVExtError
    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF
    from nnunet_mvext.training_setup.trainer_settings import resolve_trainer_settings

    settings = resolve_trainer_settings({"views": ["axial"]}, "test", {"fusion": "abaf"}, ("fusion",))
    with pytest.raises(MVExtError, match="'views' is \\['axial'\\].*nnUNetTrainerMultiViewABAF"):
        nnUNetTrainerFusionABAF.describe_model({}, "3d_fullres", {}, settings)


@pytest.mark.parametrize("patch_pooling", [False, True])
def test_the_embedding_pools_the_lesion_unless_the_patch_pooling_ablation_is_set(patch_pooling):
    x, m, _ = _crops(2, np.random.default_rng(3), noise_phase=False)
    net = _tiny_net("concat", patch_pooling=patch_pooling).eval()
    with torch.no_grad():
        skips = net.phase_skips(x)
        pooled, _ = net.phase_embeddings(skips, m)
        whole_patch, _ = net.phase_embeddings(skips, None)
    assert torch.allclose(pooled, whole_patch) == patch_pooling


@pytest.mark.parametrize("ablation", [[], ["per_phase_augmentation"]])
def test_the_fusion_trainers_draw_intensity_augmentation_per_phase_only_in_the_ablation(ablation):
    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF

    trainer = SimpleNamespace(per_phase_augmentation="per_phase_augmentation" in ablation,
                              case_info={"phase_channels": [[0], [1], [2]]},
                              trainer_settings=SimpleNamespace(phase_misalignment_voxels=0))
    transforms = nnUNetTrainerFusionABAF.get_training_transforms(
        trainer, PATCH, rotation_for_DA=(-0.5, 0.5), deep_supervision_scales=None, mirror_axes=(0, 1, 2),
        do_dummy_2d_data_aug=False)
    intensity = [t.transform for t in transforms.transforms
                 if isinstance(getattr(t, "transform", None), PHASE_SYNCHRONISED)]
    assert {type(t) for t in intensity} == set(PHASE_SYNCHRONISED)  # gamma appears twice in nnU-Net's list
    assert [t.synchronize_channels for t in intensity] == [not ablation] * len(intensity)


def test_phase_synchronisation_keeps_how_often_each_phase_is_blurred_or_downsampled():
    """nnU-Net applies blur and low resolution to each channel with probability p_sample * p_per_channel; drawn once for
    all phases, the sample-level probability must carry p_per_channel (else each phase is transformed twice as often
    with nnU-Net's p_per_channel 0.5)."""
    def training_transforms():
        return nnUNetTrainer.get_training_transforms(
            PATCH, rotation_for_DA=(-0.5, 0.5), deep_supervision_scales=None, mirror_axes=(0, 1, 2),
            do_dummy_2d_data_aug=False)

    def per_channel_rates(transforms):
        return {i: (t.apply_probability * float(t.transform.p_per_channel), t.transform.p_per_channel)
                for i, t in enumerate(transforms.transforms)
                if isinstance(getattr(t, "transform", None), PHASE_SYNCHRONISED)}

    nnunet = per_channel_rates(training_transforms())
    ours = per_channel_rates(phase_consistent(training_transforms()))
    assert sorted(ours) == sorted(nnunet) and len(ours) == 6  # gamma twice in nnU-Net's list
    assert any(p_per_channel < 1 for _, p_per_channel in nnunet.values())  # blur and low resolution: 0.5
    for i, (rate, p_per_channel) in ours.items():
        assert p_per_channel == 1
        assert rate == pytest.approx(nnunet[i][0])


def _bare_fusion_trainer(network, case_labels: dict, class_names=("c0", "c1", "c2"), tmp_path=None):
    """A fusion trainer with the attributes its training and validation steps read, without nnU-Net's __init__
    (which would need a preprocessed data set)."""
    from nnunetv2.training.logging.nnunet_logger import MetaLogger

    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF

    trainer = object.__new__(nnUNetTrainerFusionABAF)
    trainer.__dict__.update(
        absent={}, case_info={"phase_channels": [[0], [1], [2]]},
        device=torch.device("cpu"), is_ddp=False, local_rank=0, network=network, case_labels=case_labels,
        case_class_names=list(class_names), phase_names=["p0", "p1", "p2"], lesion_label=2, fallback_label=None,
        lesion_free_cases=set(), class_weights=None, _cls_samples=[0, 0], current_epoch=0, grad_scaler=None,
        trainer_settings=SimpleNamespace(classification_loss_weight=1.0),
        optimizer=torch.optim.SGD(network.parameters(), lr=0.0),
        label_manager=SimpleNamespace(foreground_labels=[1, 2]))
    trainer.logger = MetaLogger(str(tmp_path), False)
    for key in ("val_auc", "ema_val_auc", "val_macro_f1", "val_kappa"):
        trainer.logger.local_logger.my_fantastic_logging.setdefault(key, [])
    return trainer


def test_the_classification_loss_of_a_batch_is_that_of_the_patches_holding_the_lesion(tmp_path):
    """Three patches, the middle one without lesion voxels (organ only): the training step's loss is the mean
    cross-entropy of the other two, computed from the network's output for the same batch."""
    torch.manual_seed(0)
    net = _tiny_net("concat").eval()                                   # eval: no dropout, the loss is deterministic
    x = torch.randn(3, 3, *PATCH)
    target = torch.zeros(3, 1, *PATCH)
    target[:, :, 2:14, 2:14, 2:14] = 1                                  # organ everywhere
    target[0, :, 3:7, 4:9, 5:8] = 2
    target[2, :, 9:13, 8:12, 2:6] = 2
    keys = ["case_a", "case_b", "case_c"]
    trainer = _bare_fusion_trainer(net, {"case_a": 0, "case_b": 1, "case_c": 1}, ("c0", "c1"), tmp_path)
    with torch.no_grad():
        _, head = net.forward_with_classification(x, (target == 2).float())
    per_sample = F.cross_entropy(head["logits"], torch.tensor([0, 1, 1]), reduction="none")
    out = trainer.train_step({"data": x, "target": target, "keys": keys})
    assert float(out["loss"]) == pytest.approx(float(per_sample[[0, 2]].mean()), rel=1e-5)
    assert float(out["loss"]) != pytest.approx(float(per_sample.mean()), rel=1e-3)   # the test can tell the two apart
    assert trainer._cls_samples == [2, 3]


class _CaseReadingNet(torch.nn.Module):
    """Reads the case class from the image: logit_k = -10 (v - k)^2, v the mean of channel 0 over the region (the whole
    patch when the region is empty). A stand-in for a trained network: probabilities that depend on the case."""

    decoder = None

    def __init__(self, num_classes: int):
        super().__init__()
        from nnunet_mvext.architectures.phase_fusion_heads import ConcatHead

        self.head = ConcatHead(1, 1, num_classes)
        self.num_classes = num_classes

    def forward_with_classification(self, x, roi, absent_phases=None):
        mass = roi.flatten(1).sum(1)
        inside = (x[:, 0:1] * roi).flatten(1).sum(1) / mass.clamp_min(1)
        v = torch.where(mass > 0, inside, x[:, 0].flatten(1).mean(1))
        logits = -10 * (v[:, None] - torch.arange(self.num_classes, dtype=x.dtype)[None]) ** 2
        return None, {"logits": logits, "beta": None, "aux_logits": None, "embedding": logits, "has_roi": mass > 0}


class _ValidationCases:
    """A stand-in for nnU-Net's dataset of the validation cases: ``identifiers`` and ``load_case``."""

    def __init__(self, cases: dict):
        self.cases = cases
        self.identifiers = list(cases)

    def load_case(self, key):
        data, seg = self.cases[key]
        return data, seg, None, {}


def test_per_epoch_validation_pairs_each_probability_with_its_own_case_label(tmp_path, monkeypatch):
    """Every validation case once, keys in no sorted order, distinct labels, one lesion-free case that must be left
    out together with its label: the per-epoch macro AUC and macro-F1 are 1 only if every probability meets the
    label of its own case."""
    labels = {"case_e": 2, "case_a": 0, "case_free": 0, "case_d": 1, "case_b": 2, "case_c": 0, "case_f": 1}
    cases = {}
    for k, label in labels.items():
        x = torch.full((3, 20, 20, 20), 2.0)                          # outside the lesion: reads as class 2
        seg = np.zeros((1, 20, 20, 20), np.int16)
        if k != "case_free":
            seg[0, 4:9, 5:11, 6:10] = 2
            x[0][torch.from_numpy(seg[0] == 2)] = float(label)
        cases[k] = (x.numpy(), seg)
    trainer = _bare_fusion_trainer(_CaseReadingNet(3), labels, tmp_path=tmp_path)
    trainer._cls_val_dataset = _ValidationCases(cases)
    trainer.configuration_manager = SimpleNamespace(patch_size=PATCH)
    keys, y, probs, _ = trainer.classification_validation()
    assert keys == [k for k in labels if k != "case_free"]
    assert y.tolist() == [labels[k] for k in keys] and probs.argmax(1).tolist() == y.tolist()
    monkeypatch.setattr(nnUNetTrainer, "on_validation_epoch_end", lambda self, outputs: None)
    trainer.on_validation_epoch_end([])
    assert trainer.logger.get_value("val_auc", step=-1) == 1.0
    assert trainer.logger.get_value("val_macro_f1", step=-1) == 1.0
    assert trainer._cls_val_count == 6


def test_the_central_component_is_the_one_at_the_patch_centre_else_the_largest():
    from nnunet_mvext.classification.training_data import central_component

    mask = np.zeros((8, 9, 8), bool)                    # even, odd, even: centre (3.5, 4, 3.5)
    mask[0:3, 0:3, 0:3] = True                          # 27 voxels
    mask[4, 4, 3] = True                                # one voxel next to the centre
    mask[6:8, 6:9, 5:8] = True                          # 18 voxels
    assert np.argwhere(central_component(mask)).tolist() == [[4, 4, 3]]
    mask[4, 4, 3] = False
    assert central_component(mask).sum() == 27
    assert not central_component(np.zeros((4, 4, 4))).any()


@pytest.mark.parametrize("loaded, selected, pretrained", [
    (None, "0", None),
    ("checkpoint_best_auc.pth", "1", {"path": "/seg/fold_0/checkpoint_final.pth", "stored_fold": "0"})])
def test_the_fold_csv_names_the_checkpoint_and_whether_it_was_selected_on_these_cases(tmp_path, loaded, selected,
                                                                                      pretrained):
    """evaluate-cls --cv reads the fold CSVs only: the marker (and the pretrained checkpoint) must be in them, not
    only in the summary."""
    import csv
    import json
    from types import SimpleNamespace

    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusion

    labels = {"a": 0, "b": 1, "c": 1}
    trainer = SimpleNamespace(
        dataset_json={"classification": {"class_names": {"0": "neg", "1": "pos"}, "labels": labels}},
        plans_manager=SimpleNamespace(dataset_name="Dataset1_X"), case_class_names=["neg", "pos"],
        _loaded_checkpoint=loaded, fold=0, phase_names=["t1", "t2"], print_to_log_file=lambda *a, **k: None,
        pretrained=pretrained)
    results = {c: {"probabilities": np.array([0.4, 0.6]), "roi": "lesion", "beta": None, "aux_probabilities": None,
                   "embedding": np.zeros(4)} for c in labels}
    nnUNetTrainerFusion.write_classification_validation(trainer, str(tmp_path), results)
    with open(tmp_path / "classification.csv") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads(Path(tmp_path / "classification_summary.json").read_text())
    assert {r["checkpoint_selected_on_these_cases"] for r in rows} == {selected}
    assert {r["checkpoint"] for r in rows} == {summary["checkpoint"]}
    assert summary["checkpoint_selected_on_these_cases"] == (selected == "1")
    path, fold = (pretrained["path"], "0") if pretrained else ("", "")
    assert {(r["pretrained_checkpoint"], r["pretrained_checkpoint_fold"]) for r in rows} == {(path, fold)}
    assert summary["pretrained_checkpoint"] == (path or None)


def test_balanced_weights_count_only_the_cases_that_enter_the_classification_loss():
    from nnunet_mvext.classification.training_data import (
        balanced_class_weights,
        cases_in_classification_loss,
        classes_without_loss_cases,
    )

    lesion, organ = np.zeros((3, 4)), np.zeros((5, 4))
    locations = {"a1": {2: lesion, 1: organ}, "a2": {2: lesion}, "b1": {1: organ}, "b2": {1: organ}, "b3": {},
                 "c1": {2: lesion}, "c2": {2: lesion}}
    labels = {"a1": 0, "a2": 0, "b1": 1, "b2": 1, "b3": 1, "c1": 2, "c2": 2}
    names = ["a", "b", "c"]
    assert cases_in_classification_loss(locations, 2, None) == ["a1", "a2", "c1", "c2"]
    assert cases_in_classification_loss(locations, 2, 1) == ["a1", "a2", "b1", "b2", "c1", "c2"]
    # class b's three cases never enter the loss: n / (K' n_k) over a and c only (4 / (2 * 2) = 1), b neutral
    entering = cases_in_classification_loss(locations, 2, None)
    assert balanced_class_weights([labels[c] for c in entering], 3).tolist() == [1.0, 1.0, 1.0]
    weights = balanced_class_weights([0, 0, 0, 2], 3)  # 4 / (2 * 3), neutral, 4 / (2 * 1)
    assert weights == pytest.approx([2 / 3, 1.0, 2.0])
    warnings = classes_without_loss_cases(labels, entering, names, None)
    assert len(warnings) == 1 and warnings[0].startswith("class 'b': none of its 3 training case(s) has a lesion voxel")
    assert "fallback_roi_label" in warnings[0]
    assert classes_without_loss_cases(labels, cases_in_classification_loss(locations, 2, 1), names, 1) == []
    assert classes_without_loss_cases({"a1": 0}, ["a1"], ["a", "b"], None) == [
        "class 'b' has no training case in this fold: the head cannot learn it"]


def test_the_trainer_warns_per_class_and_weighs_the_cases_that_enter_the_loss(tmp_path, monkeypatch):
    """on_train_start of a fusion trainer (nnU-Net's own start switched off): class 'b' holds only lesion-free
    training cases and no fallback label is set."""
    import pickle
    from types import SimpleNamespace

    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF
    from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

    lesion = np.zeros((3, 4))
    locations = {"a1": {2: lesion}, "a2": {2: lesion}, "a3": {2: lesion}, "b1": {}, "b2": {}, "b3": {},
                 "c1": {2: lesion}, "v1": {2: lesion}}
    for case, loc in locations.items():
        with open(tmp_path / f"{case}.pkl", "wb") as f:
            pickle.dump({"class_locations": loc}, f)
    labels = {"a1": 0, "a2": 0, "a3": 0, "b1": 1, "b2": 1, "b3": 1, "c1": 2, "v1": 1}
    log = []
    trainer = object.__new__(nnUNetTrainerFusionABAF)
    trainer.__dict__.update(
        do_split=lambda: (["a1", "a2", "a3", "b1", "b2", "b3", "c1"], ["v1"]),
        preprocessed_dataset_folder=str(tmp_path), plans_manager=SimpleNamespace(dataset_name="Dataset1_X"),
        lesion_label=2, fallback_label=None,
        dataset_json={"classification": {"class_names": {"0": "a", "1": "b", "2": "c"}, "labels": labels}},
        case_class_names=["a", "b", "c"],
        trainer_settings=SimpleNamespace(class_weighting="balanced", case_sampling="uniform"),
        device=torch.device("cpu"), fold=0, case_info={"segmentation": False, "phase_channels": [[0], [1], [2]]},
        missing_record={}, is_ddp=False, network=None,
        dataset_class=lambda folder, keys: None,
        print_to_log_file=lambda *args, **kwargs: log.append(" ".join(map(str, args))))
    monkeypatch.setattr(nnUNetTrainerMV, "on_train_start", lambda self: None, raising=False)
    import nnunet_mvext.trainers.fusion_trainers as fusion_trainers

    monkeypatch.setattr(fusion_trainers, "log_fusion_memory", lambda trainer, network: None)  # tested on its own
    trainer.on_train_start()
    assert any(line.startswith("WARNING: class 'b': none of its 3 training case(s) has a lesion voxel")
               for line in log)
    # 4 cases enter the loss (a: 3, c: 1): 4 / (2 * 3), b neutral, 4 / (2 * 1); not 7 / (3 n_k) over all cases
    assert trainer.class_weights.tolist() == pytest.approx([2 / 3, 1.0, 2.0])
