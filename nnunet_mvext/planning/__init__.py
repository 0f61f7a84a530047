"""Plans: nnU-Net's experiment planning for this package's networks and what the trainers read from a plans file.

- :mod:`~nnunet_mvext.planning.plan_command`: ``nnunet-mvext plan``, the presets and the planning run; the only module
  that knows both planners.
- :mod:`~nnunet_mvext.planning.estimate_recording_planner`: the planners' common base (the planned estimate recorded
  in each configuration, preprocessed data reused).
- :mod:`~nnunet_mvext.planning.mbtfe_planner`, :mod:`~nnunet_mvext.planning.mbtfe_plans`: MBTFEUNet planned, and
  resolved from a plans configuration before training (knobs, the training-log memory note).
- :mod:`~nnunet_mvext.planning.fusion_planner`, :mod:`~nnunet_mvext.planning.fusion_memory`: patch and batch for P
  phase encoders; the fusion network's memory estimate and the training-log note.
- :mod:`~nnunet_mvext.planning.plans_config`: ``nnunet-mvext add-config``, a configuration from a JSON template.
"""
