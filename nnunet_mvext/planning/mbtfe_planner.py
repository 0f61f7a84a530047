"""nnU-Net's experiment planning for MBTFEUNet, which nnU-Net's ``-pl`` cannot discover (``nnunet-mvext plan``'s
default preset, :mod:`nnunet_mvext.planning.plan_command`).

:class:`MBTFEPlanner` is nnU-Net's ``ExperimentPlanner`` with ``UNet_class = MBTFEUNet``: nnU-Net's own patch-size
search then calls ``MBTFEUNet.compute_conv_feature_map_size`` (which counts the MBTFE and EAB conv outputs as nnU-Net
counts its own) against its usual VRAM reference, so the chosen patch size fits the same GPU memory target as for the
plain U-Net. Each MBTFEUNet configuration is saved with its knobs resolved (the values it was planned with) and the
estimate at the chosen patch (``mbtfe_planned_feature_map_size``), which the trainers compare against
(:mod:`nnunet_mvext.planning.mbtfe_plans`).
"""

from __future__ import annotations

from nnunet_mvext.architectures.mbtfe_knobs import resolve_knobs
from nnunet_mvext.architectures.mbtfe_unet import MBTFEUNet
from nnunet_mvext.planning.estimate_recording_planner import EstimateRecordingPlanner
from nnunet_mvext.planning.mbtfe_plans import MBTFE_CLASS, PLANNED_ESTIMATE_KEY


class MBTFEPlanner(EstimateRecordingPlanner):
    """nnU-Net's planner with MBTFEUNet as the network (memory estimate includes MBTFE and EAB)."""

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetPlansMBTFE",
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.UNet_class = MBTFEUNet

    def record_planned_estimates(self, plans: dict) -> None:
        """Resolved knobs and the estimate at the planned patch, for every configuration that names MBTFEUNet."""
        num_input = len(self.dataset_json["channel_names"].keys() if "channel_names" in self.dataset_json
                        else self.dataset_json["modality"].keys())
        num_output = len(self.dataset_json["labels"].keys())
        for config in plans["configurations"].values():
            architecture = config.get("architecture")
            if architecture is None or architecture["network_class_name"] != MBTFE_CLASS:
                continue
            kwargs = architecture["arch_kwargs"]
            kwargs.update(resolve_knobs(kwargs, kwargs["n_stages"]))
            config[PLANNED_ESTIMATE_KEY] = int(self.static_estimate_VRAM_usage(
                config["patch_size"], num_input, num_output, MBTFE_CLASS, kwargs, architecture["_kw_requires_import"]))
