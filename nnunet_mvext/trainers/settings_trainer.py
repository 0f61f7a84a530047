"""``nnUNetTrainerMV``: nnU-Net's trainer driven by the plans configuration's ``trainer_settings``.

With no ``trainer_settings`` it trains exactly like ``nnUNetTrainer`` (SGD, poly schedule, Dice + CE). The settings
are resolved and validated from the plans before ``nnUNetTrainer.__init__`` creates any folder, so a bad key fails
before anything is written. Variants differ only in class attributes:

* :attr:`~nnUNetTrainerMV.settings_defaults`: defaults applied under the plans' values;
* :attr:`~nnUNetTrainerMV.defining_settings`: the keys of ``settings_defaults`` the trainer's name stands for
  (``nnUNetTrainerMVAdan``: ``optimizer``). A plans value that contradicts one is refused, so that a results folder
  named after a trainer holds what the name says;
* :attr:`~nnUNetTrainerMV.settings_scopes`: the scopes beyond "all" whose keys the trainer uses ("fusion"); keys of
  other scopes (and ``adan_betas`` unless the optimizer is adan) are accepted but logged as ignored.

The resolved settings are stored in every checkpoint; a run resumed with ``--c`` (or ``--val``) logs each key whose
value differs from the checkpoint's. With ``seed`` set the training is repeatable
(:mod:`nnunet_mvext.training_setup.seeding`).

After those checks and before nnU-Net creates or writes anything in the fold folder, rank 0 takes the fold lock
(:mod:`nnunet_mvext.training_setup.fold_lock`): a fold that another live process trains (``--c`` and ``--val``
included, which write there too) is refused, naming that process. The lock is held until the process ends (or the
trainer is garbage collected): nnUNetv2_train's last step, the final validation, still writes into the fold after
``on_train_end``.
"""

from __future__ import annotations

import os
import weakref
from typing import Optional

import torch
from nnunetv2.paths import nnUNet_results
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import distributed as dist
from torch._dynamo import OptimizedModule

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.planning.mbtfe_plans import log_mbtfe_configuration, resolve_mbtfe_configuration
from nnunet_mvext.training_setup.fold_lock import FoldLock, acquire_fold_lock
from nnunet_mvext.training_setup.lr_schedules import WarmupScheduler
from nnunet_mvext.training_setup.optimizers import build_optimizer
from nnunet_mvext.training_setup.seeding import deterministic_augmenter, seed_process, start_epoch
from nnunet_mvext.training_setup.segmentation_losses import build_segmentation_loss, with_deep_supervision
from nnunet_mvext.training_setup.trainer_settings import (
    SETTINGS,
    TRAINER_SCOPES,
    TrainerSettings,
    resolve_trainer_settings,
)

#: The checkpoint key holding :meth:`TrainerSettings.record` (next to nnU-Net's own keys).
CHECKPOINT_SETTINGS_KEY = "nnunet_mvext_trainer_settings"
#: Keys that define the learning-rate schedule of an epoch.
SCHEDULE_KEYS = ("num_epochs", "initial_lr", "warmup_epochs", "lr_schedule")


def _where(plans: dict, configuration: str) -> str:
    return f"configuration '{configuration}' of plans '{plans.get('plans_name', '?')}'"


def settings_from_plans(plans: dict, configuration: str, trainer_defaults: dict,
                        scopes: tuple = ()) -> TrainerSettings:
    """Resolve the ``trainer_settings`` of ``configuration`` (after ``inherits_from``) in ``plans``."""
    config = PlansManager(plans).get_configuration(configuration).configuration
    return resolve_trainer_settings(config.get("trainer_settings"), _where(plans, configuration), trainer_defaults,
                                    scopes)


def _subclasses(cls: type) -> list:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


class nnUNetTrainerMV(nnUNetTrainer):
    """nnU-Net's trainer plus ``trainer_settings`` (optimizer, schedule, loss, epochs, ...) from the plans."""

    #: What a variant changes: defaults applied under the plans file's ``trainer_settings``.
    settings_defaults: dict = {}
    #: The keys of ``settings_defaults`` the trainer is named for; the plans may repeat their value, not change it.
    #: A key listed here without a value in ``settings_defaults`` (an abstract base) defines nothing.
    defining_settings: tuple = ()
    #: Scopes (:data:`~nnunet_mvext.training_setup.trainer_settings.TRAINER_SCOPES`) whose keys this trainer uses
    #: besides "all".
    settings_scopes: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = [k for k in (*cls.settings_defaults, *cls.defining_settings) if k not in SETTINGS]
        if unknown:
            raise TypeError(f"{cls.__name__}: settings_defaults/defining_settings name unknown keys {unknown}")
        if not set(cls.settings_scopes) <= set(TRAINER_SCOPES):
            raise TypeError(f"{cls.__name__}: settings_scopes {cls.settings_scopes} not among {TRAINER_SCOPES}")

    @classmethod
    def defining_values(cls) -> dict:
        """The defining keys of this trainer with the values its name stands for."""
        return {k: cls.settings_defaults[k] for k in cls.defining_settings if k in cls.settings_defaults}

    @classmethod
    def _trainer_for(cls, key: str, value) -> str:
        """What to train instead when the plans set a defining ``key`` to ``value``."""
        for other in _subclasses(nnUNetTrainerMV):
            if other.defining_values().get(key, object()) == value:
                return f"-tr {other.__name__}, the trainer for {key} = {value!r}"
        base = next(b for b in cls.__mro__[1:] if issubclass(b, nnUNetTrainerMV) and key not in b.defining_values())
        return f"-tr {base.__name__}, which takes '{key}' from the plans"

    @classmethod
    def refuse_contradicting_plans(cls, settings: TrainerSettings, where: str) -> None:
        """Raise if the plans set a defining key of this trainer to another value."""
        for key, value in cls.defining_values().items():
            if key in settings.explicit and settings[key] != value:
                raise MVExtError(
                    f"trainer_settings of {where}: key '{key}' is {settings[key]!r}, but {cls.__name__} is the trainer "
                    f"for {key} = {value!r}; its results folder would hold a training with {key} = "
                    f"{settings[key]!r} under its name. Remove '{key}' from the configuration's trainer_settings "
                    f"(or set it to {value!r}), or train with {cls._trainer_for(key, settings[key])}.")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        settings = settings_from_plans(plans, configuration, self.settings_defaults, self.settings_scopes)
        self.refuse_contradicting_plans(settings, _where(plans, configuration))
        if settings.seed is not None:
            seed_process(settings.seed)
        plans = resolve_mbtfe_configuration(plans, configuration)
        self.check_before_nnunet_init(plans, configuration, fold, dataset_json, settings)
        self.fold_lock = self.take_fold_lock(plans, configuration, fold)
        try:
            super().__init__(plans, configuration, fold, dataset_json, device)
        except BaseException:
            if self.fold_lock is not None:
                self.fold_lock.release(remove_created_folders=True)
            raise
        if self.fold_lock is not None:
            weakref.finalize(self, self.fold_lock.release)
            for note in self.fold_lock.notes:
                self.print_to_log_file(note)
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

    def take_fold_lock(self, plans: dict, configuration: str, fold) -> Optional[FoldLock]:
        """The lock of the fold folder nnU-Net's ``__init__`` is about to create (``output_folder``), taken by rank 0
        only; None without ``nnUNet_results`` (nnU-Net then has no folder to write) and on the other DDP ranks.
        Raises :class:`~nnunet_mvext.training_setup.fold_lock.FoldLockedError` naming the process that trains the
        fold."""
        if not nnUNet_results or (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
            return None
        identifier = convert_trainer_plans_config_to_identifier(self.__class__.__name__, plans["plans_name"],
                                                                configuration)
        folder = os.path.join(os.fspath(nnUNet_results), plans["dataset_name"], identifier, f"fold_{fold}")
        return acquire_fold_lock(folder, f"{identifier} fold {fold}")

    def check_before_nnunet_init(self, plans: dict, configuration: str, fold, dataset_json: dict,
                                 settings: TrainerSettings) -> None:
        """Variants' own checks, run after the settings are resolved and before nnU-Net creates any folder."""

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

    def _rank(self) -> int:
        return dist.get_rank() if self.is_ddp else 0

    def get_dataloaders(self):
        """nnU-Net's loaders; with ``seed``, augmentation workers with per-epoch seeds and a fixed batch order."""
        dataloader_train, dataloader_val = super().get_dataloaders()
        seed = self.trainer_settings.seed
        if seed is None:
            return dataloader_train, dataloader_val
        return (deterministic_augmenter(dataloader_train, seed, 0, self._rank()),
                deterministic_augmenter(dataloader_val, seed, 1, self._rank()))

    def on_train_start(self):
        super().on_train_start()
        if self.trainer_settings.seed is not None:
            if self.device.type == "cuda":
                # nnUNetv2_train switches cuDNN's autotuner on; its kernel choice varies from run to run
                torch.backends.cudnn.benchmark = False
                torch.backends.cudnn.deterministic = True
            self.print_to_log_file(f"seed {self.trainer_settings.seed}: every epoch starts from random states drawn "
                                   f"from (seed, epoch); augmentation workers restart per epoch")

    def on_epoch_start(self):
        if self.trainer_settings.seed is not None:
            start_epoch(self.trainer_settings.seed, self.current_epoch, self._rank(),
                        (self.dataloader_train, self.dataloader_val))
        super().on_epoch_start()

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint (the dict of ``nnUNetTrainer.save_checkpoint``, nnunetv2 2.8.1) plus
        :meth:`checkpoint_extras` (the resolved ``trainer_settings`` under :data:`CHECKPOINT_SETTINGS_KEY`)."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        mod = self.network.module if self.is_ddp else self.network
        if isinstance(mod, OptimizedModule):
            mod = mod._orig_mod
        checkpoint = {
            "network_weights": mod.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            **self.checkpoint_extras(),
        }
        torch.save(checkpoint, filename)

    def checkpoint_extras(self) -> dict:
        """Keys this package adds to nnU-Net's checkpoint dict; variants extend it."""
        return {CHECKPOINT_SETTINGS_KEY: self.trainer_settings.record()}

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """:meth:`check_checkpoint`, nnU-Net's loading, then a log entry for every setting that differs from the
        checkpoint's. nnU-Net gets what it was given: its 2.8 ``load_checkpoint`` reads only a file name (given a dict
        it stops with UnboundLocalError), and ``nnUNetv2_train --c`` / ``--val`` pass one; this package reads the file
        once, memory-mapped on the CPU, for its own keys."""
        if isinstance(filename_or_checkpoint, str):
            name = os.path.basename(filename_or_checkpoint)
            checkpoint = torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False, mmap=True)
        else:
            name, checkpoint = "the checkpoint", filename_or_checkpoint
        self.check_checkpoint(checkpoint, filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else name)
        super().load_checkpoint(filename_or_checkpoint)
        self.log_settings_changes(checkpoint.get(CHECKPOINT_SETTINGS_KEY), name)

    def check_checkpoint(self, checkpoint: dict, source: str) -> None:
        """Refuse a checkpoint before any weight loads (variants override; ``source`` names it in the message)."""

    def log_settings_changes(self, recorded, checkpoint_name: str) -> None:
        """Say in the training log which resolved settings differ from those ``checkpoint_name`` was written with."""
        if recorded is None:
            self.print_to_log_file(f"{checkpoint_name} holds no trainer_settings (written by an earlier release or "
                                   f"another trainer): changes since it was written cannot be listed.")
            return
        changes = self.trainer_settings.differences(recorded)
        if not changes:
            self.print_to_log_file(f"trainer_settings unchanged since {checkpoint_name} was written.")
            return
        text = (f"trainer_settings changed since {checkpoint_name} was written; from epoch {self.current_epoch} on "
                f"the new values apply:\n" + "\n".join(changes.values()))
        if set(changes) & set(SCHEDULE_KEYS):
            text += (f"\nThe learning-rate schedule ({', '.join(SCHEDULE_KEYS)}) differs from the one the "
                     f"checkpoint was trained with: the remaining epochs follow the new one.")
        self.print_to_log_file(text)
