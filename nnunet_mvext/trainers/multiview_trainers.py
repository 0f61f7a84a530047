"""Multi-view (2.5D) case classification trained by nnU-Net's loop: ``nnUNetTrainerMultiViewConcat``, ``…DSN``,
``…ABAF``, ``…Decision``.

Each is the fusion trainer of the same head (:mod:`nnunet_mvext.trainers.fusion_trainers`: sampling, augmentation,
per-epoch AUC, final validation, checkpoints, ``predict-cls``) with another network,
:class:`~nnunet_mvext.architectures.multiview_fusion_net.MultiViewFusionNet`: 2D slabs through the lesion centre of
nnU-Net's 3D patch, one 2D encoder per (phase, view) branch. What differs, in one place (:class:`MultiViewSetup`):

- ``settings_defaults``: ``views`` all three, ``segmentation: false`` (lesion-centred sampling; the views do not cover
  the patch, so there is no decoder and ``predict-cls`` needs ``--roi``);
- :meth:`MultiViewSetup.describe_model` refuses, before nnU-Net creates any folder and naming the setting: a 2D
  configuration, ``views`` null, unknown or repeated view names, an even or < 1 ``view_slices``, a patch with fewer
  planes than ``view_slices`` along a view's axis, ``segmentation: true``, ``pretrained_checkpoint`` (3D
  weights) and ``protocol_ablation`` ``patch_pooling``; it stores ``views``, ``view_slices`` and the branch names
  (``<phase>_<view>``) with the model;
- the training log and the validation CSV name the branches (``beta_<phase>_<view>``);
- :meth:`MultiViewSetup._region_of_interest`: the network gets one lesion component per patch (the one at the patch
  centre, else the largest: :func:`~nnunet_mvext.classification.training_data.central_component`, as every fusion
  trainer), as at inference, and a sample enters the classification loss (and the per-epoch metric) only when its
  slabs' central planes hold region voxels in every view (``MultiViewFusionNet.region_in_every_view``). With every
  lesion voxel of the patch, two lesions on either side of the centre gave a slab centre between them and no lesion
  voxel on any plane pooled, while the sample still counted as lesion-pooled.
"""

from __future__ import annotations

import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_mvext.architectures.multiview_fusion_net import DEFAULT_VIEWS, VIEW_AXES, MultiViewFusionNet, validate_views
from nnunet_mvext.classification.fusion_setup import CASE_KEY, check_stored_info
from nnunet_mvext.classification.prediction_table import phase_names_of
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.trainers.fusion_trainers import (
    _import_arch_kwargs,
    nnUNetTrainerFusion,
    nnUNetTrainerFusionABAF,
    nnUNetTrainerFusionConcat,
    nnUNetTrainerFusionDecision,
    nnUNetTrainerFusionDSN,
)

#: ``shared_encoder`` stays false here: the shared default was measured on the 3D fusion trainers only
MULTIVIEW_DEFAULTS = {"views": list(DEFAULT_VIEWS), "segmentation": False, "shared_encoder": False}


def branch_names(channel_names: dict, phase_channels, views) -> list[str]:
    """``<phase>_<view>`` for every branch, phase-major (the network's branch order)."""
    return [f"{p}_{v}" for p in phase_names_of(channel_names, phase_channels) for v in views]


class MultiViewSetup:
    """What the multi-view trainers change in a fusion trainer (mixed in before it)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        info = self.case_info
        self.phase_names = info["branch_names"]
        axes = ", ".join(f"{v} = axis {VIEW_AXES[v]} ({self.configuration_manager.patch_size[VIEW_AXES[v]]} planes)"
                         for v in info["views"])
        self.print_to_log_file(f"{self.__class__.__name__}: 2.5D views {axes} of the preprocessed patch, "
                               f"{info['view_slices']} plane(s) per slab through the lesion centre; "
                               f"{len(info['branch_names'])} branches ({', '.join(info['branch_names'])}), one 2D "
                               f"encoder each{' per view (shared by the phases)' if info['shared_encoder'] else ''}.",
                               add_timestamp=False)

    @classmethod
    def _fusion_trainer(cls) -> str:
        """The 3D fusion trainer with the same head."""
        return next(b.__name__ for b in cls.__mro__ if issubclass(b, nnUNetTrainerFusion)
                    and not issubclass(b, MultiViewSetup))

    @classmethod
    def _trainer_for(cls, key: str, value) -> str:
        """Point a contradicting ``fusion`` to the multi-view trainer of that head."""
        for other in MultiViewSetup.__subclasses__():
            if other.defining_values().get(key, object()) == value:
                return f"-tr {other.__name__}, the trainer for {key} = {value!r}"
        return super()._trainer_for(key, value)

    @classmethod
    def describe_model(cls, plans: dict, configuration: str, dataset_json: dict, settings) -> dict:
        """The fusion description plus ``views``, ``view_slices`` and ``branch_names``; refusals in the module
        docstring."""
        where = f"trainer_settings of configuration '{configuration}' of plans '{plans.get('plans_name', '?')}'"
        config = PlansManager(plans).get_configuration(configuration)
        patch = list(config.patch_size)
        if len(patch) != 3:
            raise MVExtError(f"{where}: 'views' are 2D slabs through a 3D patch, but '{configuration}' is a "
                             f"{len(patch)}D configuration (patch {patch}). Allowed: a 3D configuration "
                             f"(e.g. 3d_fullres).")
        if settings.views is None:
            raise MVExtError(f"{where}: 'views' is null, but {cls.__name__} classifies from views. Allowed: a list of "
                             f"{', '.join(repr(v) for v in VIEW_AXES)}; for 3D encoders train "
                             f"{cls._fusion_trainer()}.")
        views = validate_views(settings.views, settings.view_slices, where)
        for key, off in (("phase_norm", False), ("phase_specific_stages", 0), ("input_contrast", False),
                         ("classification_encoder_width", 0)):
            if getattr(settings, key) not in (off, None):  # null: classification_encoder_width's default, 0 here
                raise MVExtError(f"{where}: '{key}' is {getattr(settings, key)}, but it is built and measured for "
                                 f"the 3D fusion trainers only, not for {cls.__name__}'s 2D view encoders. Allowed: "
                                 f"{'null or ' if key == 'classification_encoder_width' else ''}"
                                 f"{str(off).lower()}; for it train {cls._fusion_trainer()}.")
        if settings.segmentation:
            raise MVExtError(f"{where}: 'segmentation' is true, but the multi-view network has no segmentation "
                             f"decoder (its 2D views do not cover the patch). Allowed: false (the default of "
                             f"{cls.__name__}; predict-cls then localises with --roi masks or boxes), or a 3D fusion "
                             f"trainer ({cls._fusion_trainer()}) for joint segmentation.")
        if settings.pretrained_checkpoint is not None:
            raise MVExtError(f"{where}: 'pretrained_checkpoint' holds 3D segmentation weights, which do not fit the "
                             f"2D view encoders of {cls.__name__}. Allowed: null.")
        if "patch_pooling" in settings.protocol_ablation:
            raise MVExtError(f"{where}: 'protocol_ablation' holds 'patch_pooling', but {cls.__name__} pools each "
                             f"view's slab, which is centred on the lesion. Allowed: 'lesion_only_sampling', "
                             f"'per_phase_augmentation'.")
        for v in views:
            axis = VIEW_AXES[v]
            if patch[axis] < settings.view_slices:
                raise MVExtError(f"{where}: 'view_slices' is {settings.view_slices}, but the patch {patch} has only "
                                 f"{patch[axis]} plane(s) along axis {axis} ({v} view). Allowed: an odd number <= "
                                 f"{patch[axis] if patch[axis] % 2 else patch[axis] - 1}, or leave '{v}' out of "
                                 f"'views'.")
        info = super().describe_model(plans, configuration, dataset_json, settings)
        channel_names = dataset_json.get("channel_names", dataset_json.get("modality", {}))
        info.update({"views": views, "view_slices": settings.view_slices,
                     "branch_names": branch_names(channel_names, info["phase_channels"], views)})
        return info

    def _region_of_interest(self, target, keys) -> tuple[torch.Tensor, torch.Tensor]:
        """``(roi (B, 1, *S), sample_weights (B,))``: the fusion trainers' region (one :func:`central_component` per
        sample), weighted 1 when the network's central planes hold region voxels in every view, else 0."""
        roi, _ = super()._region_of_interest(target, keys)
        return roi, self._unwrapped().region_in_every_view(roi).to(roi.dtype)

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        info = check_stored_info(configuration_manager.configuration.get(CASE_KEY),
                                 "The configuration of these plans")
        if not info.get("views"):
            raise MVExtError("The configuration of these plans describes a 3D fusion model (no 'views'); load it "
                             "with the nnUNetTrainerFusion* trainer it was trained with.")
        head_options = {"dsn_lambda": info["dsn_lambda"], "detach_beta": info["abaf_detach_beta"]}
        net = MultiViewFusionNet(configuration_manager.network_arch_class_name,
                                 _import_arch_kwargs(configuration_manager), num_input_channels, info["num_classes"],
                                 info["fusion"], info["views"], info["view_slices"], info["phase_channels"],
                                 info["shared_encoder"], head_options, info["lesion_context"],
                                 lesion_mean_only=info.get("lesion_mean_embedding", False))
        net.apply(net.initialize)
        return net


class nnUNetTrainerMultiViewConcat(MultiViewSetup, nnUNetTrainerFusionConcat):
    """2.5D views, ``fusion: concat``: MLP on the concatenated (phase, view) embeddings."""

    settings_defaults = {**nnUNetTrainerFusionConcat.settings_defaults, **MULTIVIEW_DEFAULTS}


class nnUNetTrainerMultiViewDSN(MultiViewSetup, nnUNetTrainerFusionDSN):
    """2.5D views, ``fusion: dsn``: concat head plus one auxiliary classifier per (phase, view)."""

    settings_defaults = {**nnUNetTrainerFusionDSN.settings_defaults, **MULTIVIEW_DEFAULTS}


class nnUNetTrainerMultiViewABAF(MultiViewSetup, nnUNetTrainerFusionABAF):
    """2.5D views, ``fusion: abaf``: per-sample weights beta over the (phase, view) branches."""

    settings_defaults = {**nnUNetTrainerFusionABAF.settings_defaults, **MULTIVIEW_DEFAULTS}


class nnUNetTrainerMultiViewDecision(MultiViewSetup, nnUNetTrainerFusionDecision):
    """2.5D views, ``fusion: decision``: one classifier per (phase, view), fused by learned weights."""

    settings_defaults = {**nnUNetTrainerFusionDecision.settings_defaults, **MULTIVIEW_DEFAULTS}
