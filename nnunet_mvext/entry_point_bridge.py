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
executes its single import line at every interpreter start, which calls :func:`activate`. ``activate`` appends
:data:`LOOKUP_FOLDER` to a value the user already set, never replaces it. Setting
``NNUNET_MVEXT_NO_AUTOREGISTER=1`` switches the automatic part off; ``eval "$(nnunet-mvext env)"`` then sets the
variable explicitly.

This module must stay cheap to import (standard library only): it runs in every Python process of the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Optional

ENTRY_POINT_GROUP = "nnunetv2.trainers"
EXT_TRAINER_ENV = "nnUNet_extTrainer"
DISABLE_ENV = "NNUNET_MVEXT_NO_AUTOREGISTER"
LOOKUP_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_lookup")


def autoregister_disabled(environ: Optional[dict] = None) -> bool:
    """True when the user switched the automatic registration off (``NNUNET_MVEXT_NO_AUTOREGISTER`` = 1/true/yes)."""
    environ = os.environ if environ is None else environ
    return environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def ext_trainer_value_with_lookup_folder(current: Optional[str]) -> str:
    """The ``nnUNet_extTrainer`` value that keeps ``current`` (the user's folders come first) and ends with ours."""
    parts = [p for p in (current or "").split(os.pathsep) if p.strip()]
    normalized = {os.path.normcase(os.path.abspath(p)) for p in parts}
    if os.path.normcase(LOOKUP_FOLDER) not in normalized:
        parts.append(LOOKUP_FOLDER)
    return os.pathsep.join(parts)


def activate(environ: Optional[dict] = None) -> bool:
    """Put :data:`LOOKUP_FOLDER` on ``nnUNet_extTrainer`` unless switched off. Returns whether it is active.

    Called from the ``.pth`` hook at interpreter start, so it never raises.
    """
    environ = os.environ if environ is None else environ
    try:
        if autoregister_disabled(environ):
            return False
        environ[EXT_TRAINER_ENV] = ext_trainer_value_with_lookup_folder(environ.get(EXT_TRAINER_ENV))
        return True
    except Exception:  # noqa: BLE001 - a startup hook must not break the interpreter
        return False


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
