"""fusion_model_info: every refusal a fusion trainer raises before nnU-Net creates a folder names the key, label,
channel or configuration and what is allowed; a good setup gives the stored description. (One refusal also goes
through ``nnUNetv2_train`` in tests/e2e/test_fusion_cli.py, which checks that no folder is created.)"""

import os
from types import SimpleNamespace

import pytest
import torch

from nnunet_mvext.classification.fusion_setup import differing_keys, fusion_model_info
from nnunet_mvext.classification.pretrained import resolve_pretrained_checkpoint
from nnunet_mvext.errors import MVExtError

ARCH = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 3},
        "_kw_requires_import": []}
CONFIG = {"data_identifier": "d", "batch_size": 2, "patch_size": [32, 32, 32], "spacing": [1.0, 1.0, 1.0],
          "architecture": ARCH}
PLANS = {"plans_name": "nnUNetPlans", "dataset_name": "Dataset1_x",
         "configurations": {"3d_fullres": CONFIG, "2d": {**CONFIG, "patch_size": [32, 32], "spacing": [1.0, 1.0]},
                            "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
                            "3d_lowres": CONFIG}}
LABELS = {"background": 0, "organ": 1, "lesion": 2}
CLASSES = {"class_names": {"0": "persistent", "1": "washout"}, "labels": {"case_000": 0}}


def _dataset(labels=None):
    return {"channel_names": {"0": "arterial", "1": "portal_venous", "2": "delayed"}, "labels": labels or LABELS,
            "file_ending": ".nii.gz", "classification": CLASSES}


def _settings(**changes):
    base = dict(fusion="abaf", phase_channels=None, shared_encoder=False, dsn_lambda=1.0, abaf_detach_beta=False,
                lesion_label=None, fallback_roi_label=None, segmentation=True, pretrained_checkpoint=None,
                protocol_ablation=[], lesion_context="ring", missing_phases="refuse", phase_norm=False,
                phase_specific_stages=0, input_contrast=False, classification_encoder_width=0.0)
    return SimpleNamespace(**{**base, **changes})


def test_a_good_setup_gives_the_stored_description():
    info = fusion_model_info(PLANS, "3d_fullres", _dataset(), _settings(fallback_roi_label=1))
    assert info["phase_channels"] == [[0], [1], [2]] and info["lesion_label"] == 2
    assert info["fallback_roi_label"] == 1 and info["class_names"] == ["persistent", "washout"]
    # the ablation key is stored only when set, so that folds trained before it existed still agree
    assert "patch_pooling" not in info
    # stored only when set, like the ablation keys: folds trained before these settings existed still agree
    new_keys = ("phase_norm", "phase_specific_stages", "input_contrast", "classification_encoder_width")
    assert not set(new_keys) & set(info)
    older = {k: v for k, v in info.items() if k not in new_keys}
    assert differing_keys(older, fusion_model_info(PLANS, "3d_fullres", _dataset(),
                                                   _settings(fallback_roi_label=1))) == []
    assert fusion_model_info(PLANS, "3d_fullres", _dataset(), _settings(shared_encoder=True, phase_norm=True)
                             )["phase_norm"] is True
    assert fusion_model_info(PLANS, "3d_fullres", _dataset(), _settings(classification_encoder_width=0.5)
                             )["classification_encoder_width"] == 0.5
    assert fusion_model_info(PLANS, "3d_fullres", _dataset(), _settings(protocol_ablation=["patch_pooling"])
                             )["patch_pooling"] is True


@pytest.mark.parametrize("phase_channels,segmentation,setting,stored", [
    (None, False, None, True),  # classification only, three one-channel phases: shared by default
    (None, True, None, False),  # with a decoder: one encoder per phase (shared cost lesion Dice)
    ([[0, 1], [2]], False, None, False),  # unequal phases cannot be folded into the batch: one encoder each
    (None, False, False, False),  # an explicit value wins
    ([[0], [1], [2]], True, True, True),
])
def test_shared_encoder_null_resolves_from_segmentation_and_phase_sizes_and_is_stored_resolved(
        phase_channels, segmentation, setting, stored):
    info = fusion_model_info(PLANS, "3d_fullres", _dataset(), _settings(
        phase_channels=phase_channels, segmentation=segmentation, shared_encoder=setting))
    assert info["shared_encoder"] is stored


@pytest.mark.parametrize("phase_channels,segmentation,shared,n_stages,setting,stored", [
    (None, True, False, 3, None, 1.0),  # a decoder and one encoder per phase: a classification encoder by default
    (None, False, None, 3, None, None),  # classification only: the shared encoder is read, none is built
    (None, True, True, 3, None, None),  # an explicitly shared encoder is read already
    ([[0, 1], [2]], True, False, 3, None, None),  # unequal phases cannot be folded into its batch
    (None, True, False, 1, None, None),  # a one-stage plan has no second resolution to start from
    (None, True, False, 3, 0, None),  # an explicit value wins
    (None, True, False, 3, 0.5, 0.5),
])
def test_classification_encoder_width_null_resolves_from_the_setup_and_is_stored_only_when_built(
        phase_channels, segmentation, shared, n_stages, setting, stored):
    plans = {**PLANS, "configurations": {"3d_fullres": {
        **CONFIG, "architecture": {**ARCH, "arch_kwargs": {"n_stages": n_stages}}}}}
    info = fusion_model_info(plans, "3d_fullres", _dataset(), _settings(
        phase_channels=phase_channels, segmentation=segmentation, shared_encoder=shared,
        classification_encoder_width=setting))
    assert info.get("classification_encoder_width") == stored


def test_classification_only_fusion_trainers_share_the_encoder_by_default_and_the_multi_view_trainers_do_not():
    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF, nnUNetTrainerFusionConcat
    from nnunet_mvext.trainers.multiview_trainers import nnUNetTrainerMultiViewABAF
    from nnunet_mvext.trainers.settings_trainer import settings_from_plans

    for cls, raw, shared, width in ((nnUNetTrainerFusionABAF, {}, False, 1.0),
                                    (nnUNetTrainerFusionABAF, {"segmentation": False}, True, None),
                                    (nnUNetTrainerFusionConcat, {"segmentation": False}, True, None),
                                    (nnUNetTrainerMultiViewABAF, {}, False, None)):
        plans = {**PLANS, "configurations": {"3d_fullres": {**CONFIG, "trainer_settings": raw}}}
        settings = settings_from_plans(plans, "3d_fullres", cls.settings_defaults, cls.settings_scopes)
        info = fusion_model_info(plans, "3d_fullres", _dataset(), settings)
        assert info["shared_encoder"] is shared, (cls, raw)
        assert info.get("classification_encoder_width") == width, (cls, raw)


@pytest.mark.parametrize("configuration,labels,settings,message", [
    ("2d", None, {}, "configuration '2d' of plans 'nnUNetPlans' is 2D; fusion trainers classify 3D patches"),
    ("3d_cascade_fullres", None, {}, "is a cascade stage (previous stage '3d_lowres')"),
    ("3d_fullres", {"background": 0, "organ": 1, "lesion": [1, 2]}, {}, "uses region-based labels (['lesion'])"),
    ("3d_fullres", None, {"phase_channels": [[0], [5]]}, "names channel 5, but the dataset has 3 channel(s)"),
    ("3d_fullres", None, {"phase_channels": []}, "'phase_channels' is empty. Allowed: groups of the input channels"),
    ("3d_fullres", None, {"lesion_label": 7}, "'lesion_label' is 7, not a foreground label of this dataset. "
                                              "Allowed: organ=1, lesion=2"),
    ("3d_fullres", {"background": 0, "lesion": 1, "ignore": 2}, {"lesion_label": 2},
     "'lesion_label' is 2, nnU-Net's ignore label. Allowed: a foreground label (lesion=1)"),
    ("3d_fullres", {"background": 0, "kidney": 1, "mass": 2, "cyst": 3}, {},
     "no label is named like a lesion (lesion, tumour, tumor), so trainer_settings 'lesion_label' must be set. "
     "Labels of this dataset: kidney=1, mass=2, cyst=3"),
    ("3d_fullres", {"background": 0, "tumour": 1, "lesion_satellite": 2}, {},
     "several labels are named like a lesion (tumour=1, lesion_satellite=2)"),
    ("3d_fullres", None, {"fallback_roi_label": 2}, "'fallback_roi_label' equals 'lesion_label' (2)"),
    ("3d_fullres", None, {"phase_norm": True, "shared_encoder": None},
     "'phase_norm' is true but the encoder is not shared ('shared_encoder' None, resolved to false)"),
    ("3d_fullres", None, {"input_contrast": True, "phase_channels": [[0, 1], [2]]},
     "'input_contrast' is true, but the phases have different channel counts ('phase_channels' [[0, 1], [2]])"),
    ("3d_fullres", None, {"phase_specific_stages": 1, "shared_encoder": True, "phase_norm": True},
     "'phase_norm' is true and 'phase_specific_stages' is 1; they are two ways"),
    ("3d_fullres", None, {"classification_encoder_width": 0.5, "shared_encoder": True},
     "'classification_encoder_width' is 0.5, but the encoder is shared ('shared_encoder' True, resolved to true)"),
    ("3d_fullres", None, {"classification_encoder_width": 0.5, "segmentation": False, "shared_encoder": False},
     "'classification_encoder_width' is 0.5, but 'segmentation' is false: there are no segmentation encoders"),
    ("3d_fullres", None, {"classification_encoder_width": 0.5, "phase_channels": [[0, 1], [2]]},
     "'classification_encoder_width' is 0.5, but the phases have different channel counts"),
    ("3d_fullres", None, {"phase_specific_stages": 1, "shared_encoder": False},
     "'phase_specific_stages' is 1, but the encoder is not shared ('shared_encoder' False, resolved to false)"),
])
def test_bad_setups_are_refused_by_name(configuration, labels, settings, message):
    with pytest.raises(MVExtError) as refused:
        fusion_model_info(PLANS, configuration, _dataset(labels), _settings(**settings))
    assert message in str(refused.value)


def test_a_classification_encoder_is_refused_on_a_one_stage_plan():
    plans = {**PLANS, "configurations": {"3d_fullres": {
        **CONFIG, "architecture": {**ARCH, "arch_kwargs": {"n_stages": 1}}}}}
    with pytest.raises(MVExtError, match=r"'classification_encoder_width' is 0.5, but the plan's encoder has 1 "
                                         r"stage\(s\).*Allowed: null, 0, or a number in \(0, 4\]"):
        fusion_model_info(plans, "3d_fullres", _dataset(), _settings(classification_encoder_width=0.5))


def test_phase_specific_stages_leave_at_least_one_stage_of_the_plan_shared():
    config = {**CONFIG, "architecture": {**ARCH, "arch_kwargs": {"n_stages": 3}}}
    plans = {**PLANS, "configurations": {"3d_fullres": config}}
    info = fusion_model_info(plans, "3d_fullres", _dataset(), _settings(shared_encoder=True, phase_specific_stages=2))
    assert info["phase_specific_stages"] == 2
    with pytest.raises(MVExtError, match="'phase_specific_stages' is 3, but the plan's encoder has 3 stages. Allowed: "
                                         "0, or 1..2 with 'shared_encoder' true"):
        fusion_model_info(plans, "3d_fullres", _dataset(), _settings(shared_encoder=True, phase_specific_stages=3))


@pytest.fixture()
def segmentation_folds(tmp_path):
    """nnU-Net-like checkpoints of folds 0, 1 and 'all' (init_args holds the fold) and one without init_args."""
    for fold in (0, 1, "all"):
        (tmp_path / f"fold_{fold}").mkdir()
        torch.save({"network_weights": {"encoder.w": torch.zeros(1)}, "init_args": {"fold": fold}},
                   tmp_path / f"fold_{fold}" / "checkpoint_final.pth")
    torch.save({"network_weights": {"encoder.w": torch.zeros(1)}}, tmp_path / "bare.pth")
    return tmp_path


def test_the_fold_placeholder_picks_the_checkpoint_of_the_fold_trained(segmentation_folds):
    template = str(segmentation_folds / "fold_{fold}" / "checkpoint_final.pth")
    for fold in (0, 1):
        resolved = resolve_pretrained_checkpoint(template, fold, "here")
        assert resolved == {"path": str(segmentation_folds / f"fold_{fold}" / "checkpoint_final.pth"),
                            "stored_fold": str(fold)}
    # fold 'all' of the fusion model validates on training cases anyway: any checkpoint is accepted
    assert resolve_pretrained_checkpoint(str(segmentation_folds / "fold_0" / "checkpoint_final.pth"), "all",
                                         "here")["stored_fold"] == "0"
    assert resolve_pretrained_checkpoint(str(segmentation_folds / "bare.pth"), 1, "here")["stored_fold"] is None
    with pytest.raises(MVExtError, match=r"fold_3/checkpoint_final.pth \(from .*fold_\{fold\}/checkpoint_final.pth\) "
                                         r"is not a file"):
        resolve_pretrained_checkpoint(template, 3, "here")


@pytest.mark.parametrize("stored, message", [
    (0, "was trained on fold 0, but this is fold 1: fold 0 trained on the validation cases of fold 1"),
    ("all", "was trained on fold all, but this is fold 1: fold 'all' trained on every case"),
])
def test_a_checkpoint_of_another_fold_is_refused_before_nnunet_creates_a_folder(segmentation_folds, stored, message,
                                                                                monkeypatch):
    """One segmentation checkpoint for all folds leaks the other folds' validation cases into each fold."""
    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF

    monkeypatch.setenv("nnUNet_results", str(segmentation_folds / "results"))

    path = str(segmentation_folds / f"fold_{stored}" / "checkpoint_final.pth")
    with pytest.raises(MVExtError, match=message) as refused:
        resolve_pretrained_checkpoint(path, 1, "here")
    assert "'pretrained_checkpoint'" in str(refused.value) and "fold_{fold}" in str(refused.value)
    trainer = SimpleNamespace(describe_model=lambda *a: {})  # the check runs before nnUNetTrainer.__init__
    with pytest.raises(MVExtError, match=message):
        nnUNetTrainerFusionABAF.check_before_nnunet_init(trainer, PLANS, "3d_fullres", 1, _dataset(),
                                                         _settings(pretrained_checkpoint=path))


def test_an_empty_phase_channels_list_stops_the_trainer_before_nnunet_creates_a_folder(tmp_path, monkeypatch):
    import copy

    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    plans = copy.deepcopy(PLANS)
    plans["configurations"]["3d_fullres"]["trainer_settings"] = {"phase_channels": []}
    with pytest.raises(MVExtError, match="key 'phase_channels' is out of range \\(\\[\\]\\). Allowed: a non-empty"):
        nnUNetTrainerFusionABAF(plans, "3d_fullres", 0, _dataset(), torch.device("cpu"))
    assert not os.listdir(tmp_path)
