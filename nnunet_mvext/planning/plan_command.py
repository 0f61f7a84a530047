"""``nnunet-mvext plan``: nnU-Net's fingerprint extraction, experiment planning and preprocessing with one of this
package's planners, chosen by preset.

- ``--preset mbtfe`` (default): :class:`~nnunet_mvext.planning.mbtfe_planner.MBTFEPlanner`, MBTFEUNet as the network
  (``nnUNetPlansMBTFE``).
- ``--preset fusion``: :class:`~nnunet_mvext.planning.fusion_planner.FusionPlanner`, whose estimate counts P phase
  encoders (``--phases``, default one per channel of ``dataset.json``): the plans keep the plain U-Net and get a patch
  and batch size sized for the fusion network (``nnUNetPlansFusionP<P>``).

Both reuse the default plans' preprocessed data where preprocessing is identical
(:func:`~nnunet_mvext.planning.estimate_recording_planner.reuse_data_identifiers`); only configurations whose data is
missing are preprocessed. The planners do not know this module (nor each other).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Optional, Sequence

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.planning.fusion_planner import FusionPlanner
from nnunet_mvext.planning.mbtfe_planner import MBTFEPlanner

logger = logging.getLogger(__name__)

#: preset -> (default plans name, the trainers that train its plans)
PRESETS = {"mbtfe": ("nnUNetPlansMBTFE", "nnUNetTrainerMBTFE"),
           "fusion": ("nnUNetPlansFusionP{phases}", "nnUNetTrainerFusionABAF (or ...Concat, ...DSN, ...Decision)")}


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
