"""nnU-Net's experiment planning for the fusion networks (``nnunet-mvext plan --preset fusion``,
:mod:`nnunet_mvext.planning.plan_command`).

:class:`FusionPlanner` is nnU-Net's ``ExperimentPlanner`` whose estimate is the fusion network's with P single-channel
phases (segmentation decoder included): nnU-Net's own patch-size search and batch-size rule then size patch and batch
for P encoders. The plans keep nnU-Net's plain U-Net architecture (the fusion trainers build their network from it).
Why P encoders need their own patch and batch: :mod:`nnunet_mvext.planning.fusion_memory`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from nnunet_mvext.architectures.multiphase_fusion_net import ENCODERS
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.planning.estimate_recording_planner import EstimateRecordingPlanner
from nnunet_mvext.planning.fusion_memory import PLANNED_ESTIMATE_KEY, PLANNED_PHASES_KEY, fusion_feature_map_size


class FusionPlanner(EstimateRecordingPlanner):
    """nnU-Net's planner whose memory estimate is that of a fusion network with ``phases`` phase encoders (default:
    one per channel of ``dataset.json``)."""

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: Optional[str] = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False, phases: Optional[int] = None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name or "nnUNetPlans",
                         overwrite_target_spacing, suppress_transpose)
        channels = len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))
        self.phases = channels if phases is None else phases
        if not isinstance(self.phases, int) or self.phases < 1:
            raise MVExtError(f"--phases {phases!r}: the number of phase encoders must be an integer >= 1.")
        if plans_name is None:
            self.plans_identifier = f"nnUNetPlansFusionP{self.phases}"

    def static_estimate_VRAM_usage(self, patch_size: Sequence[int], input_channels: int, output_channels: int,
                                   arch_class_name: str, arch_kwargs: dict,
                                   arch_kwargs_req_import: Sequence[str]) -> int:
        """The fusion network's estimate in place of the plan's network's (same signature as nnU-Net's); 2D
        configurations, which the fusion trainers do not train, keep nnU-Net's."""
        if arch_class_name.split(".")[-1] not in ENCODERS or len(patch_size) != 3:
            return super().static_estimate_VRAM_usage(patch_size, input_channels, output_channels, arch_class_name,
                                                      arch_kwargs, arch_kwargs_req_import)
        return fusion_feature_map_size(arch_class_name, arch_kwargs, arch_kwargs_req_import, patch_size,
                                       self.phases, output_channels)

    def record_planned_estimates(self, plans: dict) -> None:
        """The phases and the fusion estimate at the planned patch, for every 3D configuration with an architecture
        (2D configurations are not trained by the fusion trainers)."""
        num_output = len(self.dataset_json["labels"])
        for config in plans["configurations"].values():
            architecture = config.get("architecture")
            if architecture is None or len(config.get("patch_size", ())) != 3:
                continue
            config[PLANNED_PHASES_KEY] = self.phases
            config[PLANNED_ESTIMATE_KEY] = int(np.int64(self.static_estimate_VRAM_usage(
                config["patch_size"], self.phases, num_output, architecture["network_class_name"],
                architecture["arch_kwargs"], architecture["_kw_requires_import"])))
