"""The import paths that 0.2.0 moved, kept working for this release only (removed in :data:`REMOVED_IN`).

Each old path is a small module that calls :func:`reexport`: importing it warns with a ``DeprecationWarning`` that
names the new path, attributed to the line that imported it (so Python shows it by default in a script), and the old
module then holds the very objects of the new modules (the same classes and functions, not copies). The package itself
never imports an old path (``tests/test_import_graph.py``).
"""

from __future__ import annotations

import importlib
import warnings
from typing import MutableMapping

REMOVED_IN = "0.3.0"

#: old import path -> the new modules that hold what it held (several where one module was split)
MOVED: dict[str, tuple[str, ...]] = {
    "nnunet_mvext.mbtfe_planner": ("nnunet_mvext.planning.mbtfe_planner",
                                   "nnunet_mvext.planning.estimate_recording_planner",
                                   "nnunet_mvext.planning.plan_command"),
    "nnunet_mvext.mbtfe_plans": ("nnunet_mvext.planning.mbtfe_plans",),
    "nnunet_mvext.plans_config": ("nnunet_mvext.planning.plans_config",),
    "nnunet_mvext.classification.fusion_memory": ("nnunet_mvext.planning.fusion_memory",
                                                  "nnunet_mvext.planning.fusion_planner"),
    "nnunet_mvext.trainer_settings": ("nnunet_mvext.training_setup.trainer_settings",),
    "nnunet_mvext.optimizers": ("nnunet_mvext.training_setup.optimizers",),
    "nnunet_mvext.lr_schedules": ("nnunet_mvext.training_setup.lr_schedules",),
    "nnunet_mvext.segmentation_losses": ("nnunet_mvext.training_setup.segmentation_losses",),
    "nnunet_mvext.seeding": ("nnunet_mvext.training_setup.seeding",),
    "nnunet_mvext.fold_lock": ("nnunet_mvext.training_setup.fold_lock",),
    "nnunet_mvext.synthetic_dataset": ("nnunet_mvext.synthetic.multiphase", "nnunet_mvext.synthetic.dataset_folder"),
    "nnunet_mvext.synthetic_lesion_types": ("nnunet_mvext.synthetic.lesion_types",),
    "nnunet_mvext.synthetic_shape_dataset": ("nnunet_mvext.synthetic.shapes",),
}


def deprecation_message(old: str) -> str:
    new = MOVED[old]
    where = new[0] if len(new) == 1 else f"{', '.join(new[:-1])} and {new[-1]}"
    return (f"{old} moved to {where} in nnunet-mvext 0.2.0; import it from there. The old path is removed in "
            f"{REMOVED_IN}.")


def reexport(old: str, namespace: MutableMapping) -> None:
    """Warn that ``old`` moved, then put every name of its new modules (private ones included) into ``namespace``,
    the old module's globals."""
    warnings.warn(deprecation_message(old), DeprecationWarning, stacklevel=3)
    for new in MOVED[old]:
        module = importlib.import_module(new)
        namespace.update({name: value for name, value in vars(module).items() if not name.startswith("__")})
