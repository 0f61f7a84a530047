"""Run at every interpreter start by ``nnunet_mvext_autoregister.pth``: put the lookup folder on nnUNet_extTrainer.

Standard library ``os`` only (already loaded by Python itself), no output, never raises: it runs in every Python
process of the environment. Entry-point discovery is in :mod:`nnunet_mvext.entry_point_bridge` and runs only when
nnU-Net imports the lookup module to resolve a trainer name.
"""

import os

EXT_TRAINER_ENV = "nnUNet_extTrainer"
DISABLE_ENV = "NNUNET_MVEXT_NO_AUTOREGISTER"
LOOKUP_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_lookup")


def autoregister_disabled(environ: "dict | None" = None) -> bool:
    """True when the user switched the automatic registration off (``NNUNET_MVEXT_NO_AUTOREGISTER`` = 1/true/yes)."""
    environ = os.environ if environ is None else environ
    return environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def ext_trainer_value_with_lookup_folder(current: "str | None") -> str:
    """The ``nnUNet_extTrainer`` value that keeps ``current`` (the user's folders come first) and ends with ours."""
    parts = [p for p in (current or "").split(os.pathsep) if p.strip()]
    normalized = {os.path.normcase(os.path.abspath(p)) for p in parts}
    if os.path.normcase(LOOKUP_FOLDER) not in normalized:
        parts.append(LOOKUP_FOLDER)
    return os.pathsep.join(parts)


def activate(environ: "dict | None" = None) -> bool:
    """Put :data:`LOOKUP_FOLDER` on ``nnUNet_extTrainer`` unless switched off. Returns whether it is active."""
    environ = os.environ if environ is None else environ
    try:
        if autoregister_disabled(environ):
            return False
        environ[EXT_TRAINER_ENV] = ext_trainer_value_with_lookup_folder(environ.get(EXT_TRAINER_ENV))
        return True
    except Exception:  # a startup hook must not break the interpreter
        return False
