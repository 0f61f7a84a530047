"""Deprecated import path, removed in 0.3.0: ``nnunet_mvext.classification.fusion_memory`` moved in 0.2.0 to
:mod:`nnunet_mvext.planning.fusion_memory`, :mod:`nnunet_mvext.planning.fusion_planner`."""

from nnunet_mvext._moved_modules import reexport

reexport(__name__, globals())
