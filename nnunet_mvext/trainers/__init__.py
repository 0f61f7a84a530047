"""nnU-Net trainer subclasses of nnunet_mvext, one module per family; all declared in ``nnunetv2.trainers``."""
