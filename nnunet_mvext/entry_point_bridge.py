"""Makes nnU-Net's trainer lookup find every trainer declared in the ``nnunetv2.trainers`` entry-point group.

nnU-Net 2.8 looks a trainer name up in its own ``nnunetv2.training.nnUNetTrainer`` package first, then in every
folder listed in the ``nnUNet_extTrainer`` environment variable (``os.pathsep``-separated), importing each module of
that folder and taking the first one that has an attribute of that name
(``nnunetv2/utilities/find_objects.py``). This package ships a folder, :data:`LOOKUP_FOLDER`, holding one module
whose module-level ``__getattr__`` resolves a name through the entry-point group. So any installed distribution
that declares::

    [project.entry-points."nnunetv2.trainers"]
    MyTrainer = "my_pkg.trainers:MyTrainer"

is found by ``nnUNetv2_train``, ``nnUNetv2_predict`` (through the trainer name stored in the checkpoint), ``--val``,
``--c`` and the ``-num_gpus`` spawn children, as soon as :data:`LOOKUP_FOLDER` is on ``nnUNet_extTrainer``.

Getting it there: the wheel installs ``nnunet_mvext_autoregister.pth`` into site-packages; Python's ``site`` module
executes its import line at every interpreter start, which calls :func:`nnunet_mvext._startup_hook.activate`
(standard library ``os`` only; silent when the package is gone, e.g. a moved editable checkout). ``activate``
appends :data:`LOOKUP_FOLDER` to a value the user already set, never replaces it. Setting
``NNUNET_MVEXT_NO_AUTOREGISTER=1`` switches the automatic part off; ``eval "$(nnunet-mvext env)"`` then sets the
variable explicitly.

This module (``importlib.metadata``, ``dataclasses``) is imported only when nnU-Net asks the lookup module for a
name, or by ``nnunet-mvext trainers``/``env``; never at interpreter start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Optional

from nnunet_mvext._startup_hook import EXT_TRAINER_ENV, ext_trainer_value_with_lookup_folder

# An editable install made before the hook moved to _startup_hook keeps a copy of the old .pth, which calls
# entry_point_bridge.activate(); it keeps working (slowly) until the package is reinstalled.
from nnunet_mvext._startup_hook import activate as activate

ENTRY_POINT_GROUP = "nnunetv2.trainers"


@dataclass(frozen=True)
class DeclaredTrainer:
    """One entry of the ``nnunetv2.trainers`` group."""

    name: str
    target: str
    distribution: str
    entry_point: metadata.EntryPoint

    def load(self) -> type:
        return self.entry_point.load()


def declared_trainers() -> list[DeclaredTrainer]:
    """Every trainer declared in the entry-point group by any installed distribution, sorted by name."""
    found = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.metadata["Name"] if ep.dist is not None else "<unknown>"
        found.append(DeclaredTrainer(ep.name, ep.value, dist, ep))
    return sorted(found, key=lambda t: (t.name, t.distribution))


def load_declared_trainer(name: str) -> Optional[type]:
    """The class declared under ``name`` in the group, or None when no distribution declares that name.

    Raises :class:`~nnunet_mvext.errors.MVExtError` when two distributions declare the same name with different
    targets: picking one silently would train with a class the user did not choose.
    """
    if name.startswith("__"):
        return None
    matches = [t for t in declared_trainers() if t.name == name]
    if not matches:
        return None
    if len({t.target for t in matches}) > 1:
        from nnunet_mvext.errors import MVExtError

        listing = ", ".join(f"{t.distribution} ({t.target})" for t in matches)
        raise MVExtError(f"Trainer name '{name}' is declared in the '{ENTRY_POINT_GROUP}' entry-point group by "
                         f"more than one distribution: {listing}. Uninstall one or rename its trainer.")
    return matches[0].load()


def env_shell_lines() -> str:
    """Shell lines for ``eval "$(nnunet-mvext env)"``: the explicit alternative to the automatic hook."""
    value = ext_trainer_value_with_lookup_folder(os.environ.get(EXT_TRAINER_ENV))
    quoted = "'" + value.replace("'", "'\"'\"'") + "'"
    return f"export {EXT_TRAINER_ENV}={quoted}\n"
