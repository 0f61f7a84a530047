"""``nnunet-mvext plan``: nnU-Net's experiment planning for networks nnU-Net's ``-pl`` cannot discover.

:class:`MBTFEPlanner` is nnU-Net's ``ExperimentPlanner`` with ``UNet_class = MBTFEUNet``: nnU-Net's own patch-size
search then calls ``MBTFEUNet.compute_conv_feature_map_size`` (which counts the MBTFE and EAB conv outputs as nnU-Net
counts its own) against its usual VRAM reference, so the chosen patch size fits the same GPU memory target as for the
plain U-Net. Each MBTFEUNet configuration is saved with its knobs resolved (the values it was planned with) and the
estimate at the chosen patch (``mbtfe_planned_feature_map_size``), which the trainers compare against.

``--preset fusion`` plans with :class:`~nnunet_mvext.classification.fusion_memory.FusionPlanner` instead, whose
estimate counts P phase encoders (``--phases``, default one per channel of ``dataset.json``): the plans keep the
plain U-Net and get a patch and batch size sized for the fusion network (``nnUNetPlansFusionP<P>``).

Preprocessed data is reused: when the default plans (``nnUNetPlans.json``) already have a configuration of the same
name with identical spacing, normalisation, resampling, preprocessor and axis transposition, the new configuration
gets that ``data_identifier`` and is not preprocessed again.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Optional, Sequence

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from nnunet_mvext.architectures.mbtfe_knobs import resolve_knobs
from nnunet_mvext.architectures.mbtfe_unet import MBTFEUNet
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.mbtfe_plans import MBTFE_CLASS, PLANNED_ESTIMATE_KEY

logger = logging.getLogger(__name__)

#: preset -> (default plans name, the trainers that train its plans)
PRESETS = {"mbtfe": ("nnUNetPlansMBTFE", "nnUNetTrainerMBTFE"),
           "fusion": ("nnUNetPlansFusionP{phases}", "nnUNetTrainerFusionABAF (or ...Concat, ...DSN, ...Decision)")}
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


def _preprocessed_case_count(folder: str) -> int:
    if not os.path.isdir(folder):
        return 0
    return len([f for f in os.listdir(folder) if f.endswith((".b2nd", ".npz")) and not f.endswith("_seg.b2nd")])


def plan_dataset(dataset: str, preset: str = "mbtfe", gpu_memory_target: Optional[float] = None,
                 plans_name: Optional[str] = None, configurations: Sequence[str] = ("3d_fullres",),
                 num_processes: int = 4, preprocess: bool = True, force: bool = False,
                 phases: Optional[int] = None) -> str:
    """Plan (and preprocess where needed) ``dataset`` with the preset's planner; returns the plans file.
    ``phases``: the number of phase encoders of ``--preset fusion`` (default: the channels of ``dataset.json``)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiment_dataset,
        preprocess_dataset,
    )
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_mvext.classification.splits import check_raw_splits

    if preset not in PRESETS:
        raise MVExtError(f"--preset '{preset}' is not known. Allowed: {', '.join(PRESETS)}.")
    if phases is not None and preset != "fusion":
        raise MVExtError(f"--phases {phases} applies to --preset fusion (the number of phase encoders to plan for), "
                         f"not to --preset {preset}.")
    for var in (nnUNet_raw, nnUNet_preprocessed):
        var.require()
    try:
        dataset_name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise MVExtError(f"Dataset '{dataset}' not found: {e}") from None
    dataset_id = int(dataset_name[7:10])
    check_raw_splits(dataset_name)  # nnU-Net's planner would stop with a bare AssertionError
    dataset_json = load_json(os.path.join(str(nnUNet_raw), dataset_name, "dataset.json"))
    planner = MBTFEPlanner
    if preset == "fusion":
        from nnunet_mvext.classification.fusion_memory import FusionPlanner

        channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
        phases = channels if phases is None else phases
        if phases < 1 or phases > channels:
            raise MVExtError(f"--phases {phases}: {dataset_name} has {channels} channel(s), so a fusion network has "
                             f"1 to {channels} phase encoders ('phase_channels' groups channels into phases).")
        planner = functools.partial(FusionPlanner, phases=phases)
    plans_name = plans_name or PRESETS[preset][0].format(phases=phases)
    plans_file = os.path.join(str(nnUNet_preprocessed), dataset_name, plans_name + ".json")
    if os.path.isfile(plans_file) and not force:
        raise MVExtError(f"Plans file {plans_file} already exists; refusing to overwrite it. Use --force to plan "
                         f"again (configurations you added to it are kept) or --plans-name for a new file.")
    fingerprint = os.path.join(str(nnUNet_preprocessed), dataset_name, "dataset_fingerprint.json")
    if not os.path.isfile(fingerprint):
        logger.info("No fingerprint for %s yet: running nnU-Net's fingerprint extraction.", dataset_name)
        extract_fingerprints([dataset_id], num_processes=num_processes, check_dataset_integrity=True)

    plan_experiment_dataset(dataset_id, planner, gpu_memory_target_in_gb=gpu_memory_target,
                            overwrite_plans_name=plans_name)
    plans = load_json(plans_file)
    num_cases = dataset_json["numTraining"]
    todo = []
    for c in configurations:
        if c not in plans["configurations"]:
            logger.info("Configuration %s was not planned for this dataset; skipped.", c)
            continue
        identifier = plans["configurations"][c]["data_identifier"]
        folder = os.path.join(str(nnUNet_preprocessed), dataset_name, identifier)
        if _preprocessed_case_count(folder) >= num_cases:
            logger.info("%s: reusing preprocessed data in %s", c, folder)
        else:
            todo.append(c)
    if todo and preprocess:
        preprocess_dataset(dataset_id, plans_name, todo, [num_processes] * len(todo))
    elif todo:
        logger.info("Not preprocessed (--no-preprocess): %s", ", ".join(todo))
    return plans_file
