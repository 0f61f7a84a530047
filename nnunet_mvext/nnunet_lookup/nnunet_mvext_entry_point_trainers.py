"""The module nnU-Net imports from ``nnUNet_extTrainer`` (see :mod:`nnunet_mvext.entry_point_bridge`).

nnU-Net asks ``hasattr(module, trainer_name)``; the module-level ``__getattr__`` (PEP 562) answers with the class
declared under that name in the ``nnunetv2.trainers`` entry-point group. This folder must hold no other module:
nnU-Net imports every module it finds here.
"""

from nnunet_mvext.entry_point_bridge import load_declared_trainer


def __getattr__(name: str):
    trainer = load_declared_trainer(name)
    if trainer is None:
        raise AttributeError(name)
    return trainer
