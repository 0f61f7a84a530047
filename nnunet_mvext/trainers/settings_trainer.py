"""``nnUNetTrainerMV``: nnU-Net's trainer driven by the plans configuration's ``trainer_settings``.

With no ``trainer_settings`` it trains exactly like ``nnUNetTrainer`` (SGD, poly schedule, Dice + CE). The settings
are resolved and validated from the plans before ``nnUNetTrainer.__init__`` creates any folder, so a bad key fails
before anything is written. Variants differ only in :attr:`nnUNetTrainerMV.settings_defaults`.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_mvext.lr_schedules import WarmupScheduler
from nnunet_mvext.mbtfe_plans import log_mbtfe_configuration, resolve_mbtfe_configuration
from nnunet_mvext.optimizers import build_optimizer
from nnunet_mvext.segmentation_losses import build_segmentation_loss, with_deep_supervision
from nnunet_mvext.trainer_settings import TrainerSettings, resolve_trainer_settings


def settings_from_plans(plans: dict, configuration: str, trainer_defaults: dict) -> TrainerSettings:
    """Resolve the ``trainer_settings`` of ``configuration`` (after ``inherits_from``) in ``plans``."""
    config = PlansManager(plans).get_configuration(configuration).configuration
    where = f"configuration '{configuration}' of plans '{plans.get('plans_name', '?')}'"
    return resolve_trainer_settings(config.get("trainer_settings"), where, trainer_defaults)


class nnUNetTrainerMV(nnUNetTrainer):
    """nnU-Net's trainer plus ``trainer_settings`` (optimizer, schedule, loss, epochs, ...) from the plans."""

    #: What a variant changes: defaults applied under the plans file's ``trainer_settings``.
    settings_defaults: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        settings = settings_from_plans(plans, configuration, self.settings_defaults)
        plans = resolve_mbtfe_configuration(plans, configuration)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.trainer_settings = settings
        self.num_epochs = settings.num_epochs
        self.num_iterations_per_epoch = settings.num_iterations_per_epoch
        self.num_val_iterations_per_epoch = settings.num_val_iterations_per_epoch
        self.initial_lr = settings.initial_lr
        self.weight_decay = settings.weight_decay
        self.oversample_foreground_percent = settings.oversample_foreground_percent
        self.save_every = settings.save_every
        self.print_to_log_file(f"{self.__class__.__name__}: trainer_settings in force for configuration "
                               f"'{configuration}':\n{settings.describe()}", add_timestamp=False)
        log_mbtfe_configuration(self)

    def configure_optimizers(self):
        s = self.trainer_settings
        optimizer = build_optimizer(s.optimizer, self.network, s.initial_lr, s.weight_decay, s.adan_betas)
        lr_scheduler = WarmupScheduler(optimizer, s.initial_lr, s.num_epochs, s.warmup_epochs, s.lr_schedule)
        return optimizer, lr_scheduler

    def _build_loss(self):
        loss = build_segmentation_loss(self.trainer_settings.loss, self.label_manager,
                                       self.configuration_manager.batch_dice, self.is_ddp)
        if self._do_i_compile():
            loss.dc = torch.compile(loss.dc)
        if self.enable_deep_supervision:
            loss = with_deep_supervision(loss, len(self._get_deep_supervision_scales()), self.is_ddp)
        return loss
