"""Deprecated import path, removed in 0.3.0: ``nnunet_mvext.optimizers`` moved in 0.2.0 to
:mod:`nnunet_mvext.training_setup.optimizers`."""

from nnunet_mvext._moved_modules import reexport

reexport(__name__, globals())
