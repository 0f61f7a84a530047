"""What a trainer of this package sets itself up with, before and while nnU-Net trains: the helpers, not the trainers
(the nnU-Net trainer subclasses are in :mod:`nnunet_mvext.trainers`).

- :mod:`~nnunet_mvext.training_setup.trainer_settings`: the ``trainer_settings`` keys of a plans configuration:
  definition, defaults, scopes, validation.
- :mod:`~nnunet_mvext.training_setup.optimizers`: sgd (nnU-Net's) and adan (timm, foreach, no decay on norms/biases).
- :mod:`~nnunet_mvext.training_setup.lr_schedules`: warmup + poly/cosine, a function of the epoch.
- :mod:`~nnunet_mvext.training_setup.segmentation_losses`: nnU-Net's losses for dice_ce / dice, one deep-supervision
  weighting.
- :mod:`~nnunet_mvext.training_setup.seeding`: the ``seed`` setting: process and augmentation-worker random states.
- :mod:`~nnunet_mvext.training_setup.fold_lock`: one training per fold folder: the lock file, stale-lock takeover, the
  override.
"""
