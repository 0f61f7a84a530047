"""Deprecated import path, removed in 0.3.0: ``nnunet_mvext.mbtfe_planner`` moved in 0.2.0 to
:mod:`nnunet_mvext.planning.mbtfe_planner` (``MBTFEPlanner``),
:mod:`nnunet_mvext.planning.estimate_recording_planner` (``EstimateRecordingPlanner``, ``reuse_data_identifiers``) and
:mod:`nnunet_mvext.planning.plan_command` (``PRESETS``, ``plan_dataset``)."""

from nnunet_mvext._moved_modules import reexport

reexport(__name__, globals())
