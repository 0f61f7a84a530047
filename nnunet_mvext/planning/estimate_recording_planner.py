"""nnU-Net's ``ExperimentPlanner`` with the two things both planners of ``nnunet-mvext plan`` add.

:class:`EstimateRecordingPlanner` records, before the plans are saved, the memory estimate each configuration was
planned with (the subclass says which: :class:`~nnunet_mvext.planning.mbtfe_planner.MBTFEPlanner`,
:class:`~nnunet_mvext.planning.fusion_planner.FusionPlanner`); the trainers compare their network's estimate against
it. Preprocessed data is reused (:func:`reuse_data_identifiers`): when the default plans (``nnUNetPlans.json``) already
have a configuration of the same name with identical spacing, normalisation, resampling, preprocessor and axis
transposition, the new configuration gets that ``data_identifier`` and is not preprocessed again.
"""

from __future__ import annotations

import os

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

PREPROCESSING_KEYS = ("spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
                      "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs",
                      "preprocessor_name")


class EstimateRecordingPlanner(ExperimentPlanner):
    """nnU-Net's planner that records, before saving, the estimate each configuration was planned with
    (:meth:`record_planned_estimates`, defined by the subclass) and reuses the default plans' preprocessed data where
    preprocessing is identical (:func:`reuse_data_identifiers`)."""

    reuse_from_plans = "nnUNetPlans"

    def record_planned_estimates(self, plans: dict) -> None:
        raise NotImplementedError

    def save_plans(self, plans: dict) -> None:
        self.record_planned_estimates(plans)
        recursive_fix_for_json_export(plans)
        reuse_data_identifiers(plans, self.dataset_name, self.reuse_from_plans)
        super().save_plans(plans)



def reuse_data_identifiers(plans: dict, dataset_name: str, reference_plans: str) -> list[str]:
    """Point configurations at ``reference_plans``' preprocessed data where preprocessing is identical."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed

    reference_file = os.path.join(str(nnUNet_preprocessed), dataset_name, reference_plans + ".json")
    if not os.path.isfile(reference_file):
        return []
    reference = load_json(reference_file)
    if reference.get("transpose_forward") != plans.get("transpose_forward"):
        return []
    reused = []
    for name, config in plans["configurations"].items():
        ref = reference["configurations"].get(name)
        if ref is None or "data_identifier" not in ref or "data_identifier" not in config:
            continue
        if all(_normalized(config.get(k)) == _normalized(ref.get(k)) for k in PREPROCESSING_KEYS):
            config["data_identifier"] = ref["data_identifier"]
            reused.append(name)
    return reused


def _normalized(value):
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 8)
    return value


