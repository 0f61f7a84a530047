"""The module nnU-Net imports from ``nnUNet_extTrainer`` (see :mod:`nnunet_mvext.entry_point_bridge`).

nnU-Net asks ``hasattr(module, trainer_name)``; the module-level ``__getattr__`` (PEP 562) answers with the class
declared under that name in the ``nnunetv2.trainers`` entry-point group. This folder must hold no other module:
nnU-Net imports every module it finds here.

An exported ``nnUNet_extTrainer`` can leak into an environment where nnunet_mvext is not installed. Then this module
answers no name, so nnU-Net goes on to its own "Could not find requested nnunet trainer" message instead of a
``ModuleNotFoundError`` traceback from here.
"""

import logging
import os
import sys

try:
    from nnunet_mvext.entry_point_bridge import load_declared_trainer
except ModuleNotFoundError as error:
    if error.name not in ("nnunet_mvext", "nnunet_mvext.entry_point_bridge"):
        raise
    logging.getLogger(__name__).warning(
        "nnUNet_extTrainer lists %s, the trainer lookup folder of nnunet_mvext, but this Python (%s) cannot import "
        "nnunet_mvext: its trainers are not available here. Install nnunet-mvext into this environment or remove "
        "the folder from nnUNet_extTrainer.", os.path.dirname(os.path.abspath(__file__)), sys.executable)
    load_declared_trainer = None


def __getattr__(name: str):
    trainer = None if load_declared_trainer is None else load_declared_trainer(name)
    if trainer is None:
        raise AttributeError(name)
    return trainer
