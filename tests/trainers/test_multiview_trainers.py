"""Multi-view trainers: the stored description, the network they build, and every refusal before nnU-Net creates a
folder (nnUNetTrainer.__init__ raises here instead of running)."""

import copy

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn

from nnunet_mvext.architectures.multiview_fusion_net import MultiViewFusionNet
from nnunet_mvext.errors import MVExtError

ARCH = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16],
                        "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2, 2, 2],
                        "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
ARCH_2D = copy.deepcopy(ARCH)
ARCH_2D["arch_kwargs"].update(conv_op="torch.nn.modules.conv.Conv2d", kernel_sizes=[[3, 3]] * 3,
                              strides=[[1, 1], [2, 2], [2, 2]],
                              norm_op="torch.nn.modules.instancenorm.InstanceNorm2d")
DATASET_JSON = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
                "file_ending": ".nii.gz",
                "classification": {"class_names": {"0": "rod_0", "1": "rod_1", "2": "rod_2"},
                                   "labels": {"case_000": 0}}}


def _plans(settings=None, patch=(4, 32, 32)):
    config = {"data_identifier": "d", "batch_size": 2, "patch_size": list(patch), "architecture": ARCH,
              "spacing": [5.0, 0.8, 0.8]}
    return {"plans_name": "nnUNetPlans", "dataset_name": "Dataset1_x",
            "configurations": {"3d_fullres": {**config, "trainer_settings": settings or {}},
                               "2d": {"data_identifier": "d2", "batch_size": 2, "patch_size": [32, 32],
                                      "architecture": ARCH_2D, "spacing": [0.8, 0.8]}}}


def _trainer(name: str):
    """A multi-view trainer class, imported when a test first needs it: importing the fusion trainers while pytest
    collects would add subclasses that tests/training_setup/test_trainer_settings.py's defining-key test does not
    expect."""
    from nnunet_mvext.trainers import multiview_trainers

    return getattr(multiview_trainers, name)


class _NnUNetInitReached(Exception):
    pass


@pytest.fixture
def no_nnunet_init(monkeypatch, tmp_path):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    def reached(self, *args, **kwargs):
        raise _NnUNetInitReached

    monkeypatch.setattr(nnUNetTrainer, "__init__", reached)
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))


def _start(trainer, settings=None, configuration="3d_fullres", patch=(4, 32, 32)):
    trainer(_plans(settings, patch), configuration, 0, DATASET_JSON, torch.device("cpu"))


@pytest.mark.parametrize("trainer", ["nnUNetTrainerMultiViewConcat", "nnUNetTrainerMultiViewDSN",
                                     "nnUNetTrainerMultiViewABAF", "nnUNetTrainerMultiViewDecision"])
def test_a_plain_plan_is_enough(no_nnunet_init, trainer):
    cls = _trainer(trainer)
    with pytest.raises(_NnUNetInitReached):
        _start(cls)
    from nnunet_mvext.trainers.settings_trainer import settings_from_plans

    settings = settings_from_plans(_plans(), "3d_fullres", cls.settings_defaults, cls.settings_scopes)
    info = cls.describe_model(_plans(), "3d_fullres", DATASET_JSON, settings)
    assert info["views"] == ["axial", "coronal", "sagittal"] and info["view_slices"] == 1
    assert info["segmentation"] is False and info["fusion"] == cls.settings_defaults["fusion"]
    assert info["branch_names"] == ["T2_axial", "T2_coronal", "T2_sagittal"]


@pytest.mark.parametrize("configuration,settings,patch,message", [
    ("2d", {}, (4, 32, 32), "'views' are 2D slabs through a 3D patch, but '2d' is a 2D configuration"),
    ("3d_fullres", {"views": ["axial", "oblique"]}, (4, 32, 32), "key 'views' is out of range"),
    ("3d_fullres", {"views": ["axial", "axial"]}, (4, 32, 32), "key 'views' is out of range"),
    ("3d_fullres", {"view_slices": 2}, (4, 32, 32), "key 'view_slices' is out of range"),
    ("3d_fullres", {"view_slices": 0}, (4, 32, 32), "key 'view_slices' is out of range"),
    ("3d_fullres", {"view_slices": 5}, (4, 32, 32),
     "'view_slices' is 5, but the patch [4, 32, 32] has only 4 plane(s) along axis 0 (axial view)"),
    ("3d_fullres", {"segmentation": True}, (4, 32, 32), "'segmentation' is true"),
    ("3d_fullres", {"pretrained_checkpoint": "seg.pth"}, (4, 32, 32), "'pretrained_checkpoint' holds 3D"),
    ("3d_fullres", {"fusion": "concat"}, (4, 32, 32), "-tr nnUNetTrainerMultiViewConcat"),
    ("3d_fullres", {"protocol_ablation": ["patch_pooling"]}, (4, 32, 32),
     "'protocol_ablation' holds 'patch_pooling'"),
    ("3d_fullres", {"input_contrast": True}, (4, 32, 32),
     "'input_contrast' is True, but it is built and measured for the 3D fusion trainers only, not for "
     "nnUNetTrainerMultiViewABAF's 2D view encoders"),
    ("3d_fullres", {"classification_encoder_width": 0.5}, (4, 32, 32),
     "'classification_encoder_width' is 0.5, but it is built and measured for the 3D fusion trainers only, not for "
     "nnUNetTrainerMultiViewABAF's 2D view encoders. Allowed: null or 0; for it train"),
    ("3d_fullres", {"shared_encoder": True, "phase_norm": True}, (4, 32, 32),
     "'phase_norm' is True, but it is built and measured for the 3D fusion trainers only"),
])
def test_bad_setups_are_refused_before_nnunet_creates_anything(no_nnunet_init, configuration, settings, patch,
                                                               message):
    with pytest.raises(MVExtError) as e:
        _start(_trainer("nnUNetTrainerMultiViewABAF"), settings, configuration, patch)
    assert message in str(e.value)


def test_a_thin_patch_is_fine_without_the_view_along_its_thin_axis(no_nnunet_init):
    with pytest.raises(_NnUNetInitReached):
        _start(_trainer("nnUNetTrainerMultiViewABAF"), {"views": ["coronal", "sagittal"], "view_slices": 5})


def test_the_network_is_built_from_the_stored_description():
    from nnunet_mvext.trainers.settings_trainer import settings_from_plans

    cls = _trainer("nnUNetTrainerMultiViewDSN")
    plans = _plans({"view_slices": 3, "views": ["axial", "sagittal"]})
    settings = settings_from_plans(plans, "3d_fullres", cls.settings_defaults, cls.settings_scopes)
    info = cls.describe_model(plans, "3d_fullres", DATASET_JSON, settings)
    plans["configurations"]["3d_fullres"]["case_classification"] = info
    pm = PlansManager(plans)
    net = cls.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 1, 3, True)
    assert isinstance(net, MultiViewFusionNet) and net.decoder is None and net.views == ["axial", "sagittal"]
    assert net.view_slices == 3 and len(net.encoders) == 2 and len(net.head.aux) == 2
    assert not any(isinstance(m, nn.Conv3d) for m in net.modules())
    _, head = net.forward_with_classification(torch.randn(2, 1, 4, 32, 32))
    assert head["logits"].shape == (2, 3)

    del plans["configurations"]["3d_fullres"]["case_classification"]["views"]
    pm = PlansManager(plans)
    with pytest.raises(MVExtError, match="3D fusion model"):
        cls.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 1, 3, True)


@pytest.mark.parametrize("ablation", [[], ["patch_pooling"]])
def test_the_3d_fusion_network_pools_the_patch_only_when_the_stored_description_says_so(ablation):
    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF
    from nnunet_mvext.trainers.settings_trainer import settings_from_plans

    cls = nnUNetTrainerFusionABAF
    plans = _plans({"protocol_ablation": ablation})
    settings = settings_from_plans(plans, "3d_fullres", cls.settings_defaults, cls.settings_scopes)
    plans["configurations"]["3d_fullres"]["case_classification"] = cls.describe_model(plans, "3d_fullres",
                                                                                      DATASET_JSON, settings)
    pm = PlansManager(plans)
    net = cls.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 1, 3, True)
    assert net.patch_pooling == bool(ablation)


def test_training_pools_one_lesion_component_per_patch_and_weights_from_the_planes_pooled():
    """Two lesions in a patch: the network gets the one at the patch centre, else the largest, and the sample counts
    as lesion-pooled only when every view's central plane holds it. With every lesion voxel, sample 0's centre of mass
    (9.4 per axis) falls between its two lesions and no view pooled a lesion voxel, yet the sample counted."""
    net = MultiViewFusionNet(ARCH["network_class_name"], {**ARCH["arch_kwargs"], "conv_op": nn.Conv3d,
                                                          "norm_op": nn.InstanceNorm3d, "nonlin": nn.LeakyReLU},
                             1, 3, "concat")
    trainer = object.__new__(_trainer("nnUNetTrainerMultiViewABAF"))
    trainer.__dict__.update(network=net, is_ddp=False, lesion_label=2, fallback_label=None, lesion_free_cases=set())
    target = torch.zeros(3, 1, 16, 16, 16)
    target[:, :, 0:16, 0:16, 0:16] = 1                                    # organ
    target[0, :, 1:4, 1:4, 1:4] = 2                                       # 27 voxels
    target[0, :, 11:15, 11:15, 11:15] = 2                                 # 64 voxels, the larger: chosen
    target[1, :, 7:9, 7:9, 7:9] = 2                                       # 8 voxels at the patch centre: chosen
    target[1, :, 0:5, 10:16, 10:16] = 2                                   # 180 voxels
    roi, weights = trainer._region_of_interest(target, ["a", "b", "c"])
    expected = torch.zeros_like(roi)
    expected[0, :, 11:15, 11:15, 11:15] = 1
    expected[1, :, 7:9, 7:9, 7:9] = 1
    torch.testing.assert_close(roi, expected)
    assert weights.tolist() == [1.0, 1.0, 0.0]
    _, planes = net.slabs(torch.zeros(3, 1, 16, 16, 16), roi)
    assert all(float(p[b].sum()) > 0 for p in planes for b in (0, 1))


def test_a_model_stored_before_the_classification_encoder_existed_rebuilds_without_it():
    """The default (null) builds the classification encoder; a stored description without the key (a model trained
    before the setting existed) rebuilds the network it was trained with, so its checkpoint loads and predicts."""
    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF
    from nnunet_mvext.trainers.settings_trainer import settings_from_plans

    cls = nnUNetTrainerFusionABAF
    plans = _plans({})
    settings = settings_from_plans(plans, "3d_fullres", cls.settings_defaults, cls.settings_scopes)
    info = cls.describe_model(plans, "3d_fullres", DATASET_JSON, settings)
    plans["configurations"]["3d_fullres"]["case_classification"] = info
    pm = PlansManager(plans)
    default = cls.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 1, 3, True)
    assert default.classification_encoder is not None

    older = {k: v for k, v in info.items() if k != "classification_encoder_width"}
    plans["configurations"]["3d_fullres"]["case_classification"] = older
    pm = PlansManager(plans)
    rebuilt = cls.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 1, 3, True)
    assert rebuilt.classification_encoder is None
    zero_plans = _plans({"classification_encoder_width": 0})
    zero_info = cls.describe_model(zero_plans, "3d_fullres", DATASET_JSON, settings_from_plans(
        zero_plans, "3d_fullres", cls.settings_defaults, cls.settings_scopes))
    assert zero_info == older  # width 0 is stored as absent, as before the setting existed
    zero_plans["configurations"]["3d_fullres"]["case_classification"] = zero_info
    pm = PlansManager(zero_plans)
    width_zero = cls.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 1, 3, True)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in width_zero.state_dict().items()}
