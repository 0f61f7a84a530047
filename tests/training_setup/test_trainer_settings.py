import gc

import pytest

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.training_setup.trainer_settings import (
    OPTIMIZER_DEFAULTS,
    SETTINGS,
    resolve_trainer_settings,
    validate_raw_settings,
)

WHERE = "configuration 'x' of plans 'p'"


def test_defaults_match_nnunet_trainer_without_settings():
    s = resolve_trainer_settings(None, WHERE)
    assert (s.num_epochs, s.num_iterations_per_epoch, s.num_val_iterations_per_epoch) == (1000, 250, 50)
    assert (s.optimizer, s.initial_lr, s.weight_decay, s.lr_schedule, s.warmup_epochs, s.loss) == \
        ("sgd", 1e-2, 3e-5, "poly", 0, "dice_ce")
    assert s.explicit == frozenset()


def test_adan_gets_its_own_lr_weight_decay_and_warmup():
    s = resolve_trainer_settings({"num_epochs": 200}, WHERE, {"optimizer": "adan"})
    assert (s.optimizer, s.initial_lr, s.weight_decay, s.warmup_epochs) == ("adan", 1e-3, 2e-2, 10)


def test_plans_values_win_over_trainer_defaults():
    s = resolve_trainer_settings({"optimizer": "sgd", "initial_lr": 0.05}, WHERE, {"optimizer": "adan"})
    assert s.optimizer == "sgd" and s.initial_lr == 0.05
    assert s.explicit == {"optimizer", "initial_lr"}
    assert "initial_lr" in s.describe() and "(plans)" in s.describe()


def test_misspelled_key_is_named_with_suggestion_and_allowed_keys():
    with pytest.raises(MVExtError) as e:
        resolve_trainer_settings({"num_epocs": 5}, WHERE)
    msg = str(e.value)
    assert "'num_epocs'" in msg and "Did you mean 'num_epochs'" in msg
    assert all(k in msg for k in SETTINGS)
    assert WHERE in msg


@pytest.mark.parametrize("key,value,problem", [
    ("num_epochs", "10", "wrong type"),
    ("num_epochs", 2.5, "wrong type"),
    ("num_epochs", True, "wrong type"),
    ("num_epochs", 0, "out of range"),
    ("initial_lr", -1e-3, "out of range"),
    ("weight_decay", -1, "out of range"),
    ("optimizer", "adam", "value"),
    ("lr_schedule", "step", "value"),
    ("loss", "ce", "value"),
    ("oversample_foreground_percent", 1.5, "out of range"),
    ("adan_betas", [0.9, 0.9], "out of range"),
    ("protocol_ablation", ["patch_pooling", "lesion_pooling"], "out of range"),
    ("protocol_ablation", ["patch_pooling", "patch_pooling"], "out of range"),
    ("pretrained_checkpoint", "/models/fold_{fold_id}/checkpoint_final.pth", "out of range"),
    ("pretrained_checkpoint", "/models/fold_{fold/checkpoint_final.pth", "out of range"),
    ("phase_channels", [[0], []], "out of range"),
    ("phase_channels", [], "out of range"),  # not 'one phase per channel': that is null
])
def test_bad_values_name_the_key_and_what_is_allowed(key, value, problem):
    with pytest.raises(MVExtError) as e:
        validate_raw_settings({key: value}, WHERE)
    assert f"'{key}'" in str(e.value) and problem in str(e.value)
    assert SETTINGS[key].allowed in str(e.value)


def test_a_fold_placeholder_is_accepted_in_the_pretrained_checkpoint():
    path = "/models/fold_{fold}/checkpoint_final.pth"
    assert resolve_trainer_settings({"pretrained_checkpoint": path}, WHERE).pretrained_checkpoint == path


def test_warmup_must_be_shorter_than_training():
    with pytest.raises(MVExtError, match="'warmup_epochs' is 5 but num_epochs is 5"):
        resolve_trainer_settings({"num_epochs": 5, "warmup_epochs": 5}, WHERE)


def test_settings_object_must_be_a_mapping():
    with pytest.raises(MVExtError, match="must be a JSON object"):
        validate_raw_settings(["num_epochs", 3], WHERE)


def test_int_is_accepted_where_a_float_is_expected():
    assert resolve_trainer_settings({"initial_lr": 1}, WHERE).initial_lr == 1


# --- scopes: keys a trainer does not use are accepted and logged as ignored -------------------------------------

def _in_force_and_ignored(settings):
    in_force, _, ignored = settings.describe().partition("set in the plans but ignored by this trainer:")
    return in_force, ignored


def test_keys_of_unused_scopes_are_listed_as_ignored_not_in_force():
    fusion_keys = [k for k, s in SETTINGS.items() if s.applies_to == "fusion"]
    raw = {"fusion": "dsn", "dsn_lambda": 3, "adan_betas": [0.9, 0.9, 0.9], "num_epochs": 3}
    s = resolve_trainer_settings(raw, WHERE)  # sgd, no fusion scope
    assert s.ignored == {"adan_betas", *fusion_keys}
    in_force, ignored = _in_force_and_ignored(s)
    assert "num_epochs" in in_force and "seed" in in_force
    assert not any(k in in_force for k in ("adan_betas", *fusion_keys))
    assert "adan_betas" in ignored and "(used by trainers with optimizer 'adan')" in ignored
    assert "fusion" in ignored and "dsn_lambda" in ignored and "(used by fusion trainers)" in ignored
    assert "lesion_label" not in ignored, "unused keys the plans do not set are not listed"


def test_a_trainer_scope_and_the_optimizer_put_keys_in_force():
    s = resolve_trainer_settings({"fusion": "dsn", "adan_betas": [0.9, 0.9, 0.9]}, WHERE, {"optimizer": "adan"},
                                 scopes=("fusion",))
    assert s.ignored == frozenset()
    in_force, ignored = _in_force_and_ignored(s)
    assert ignored == "" and "adan_betas" in in_force and "fusion" in in_force


def test_unknown_scope_is_a_programming_error():
    with pytest.raises(ValueError, match="fusoin"):
        resolve_trainer_settings(None, WHERE, scopes=("fusoin",))


def test_every_fusion_key_is_scoped_to_fusion_trainers():
    for spec in SETTINGS.values():
        assert spec.applies_to in ("all", "fusion", *OPTIMIZER_DEFAULTS), spec.name
        assert (spec.applies_to == "fusion") == spec.doc.startswith("Fusion trainers"), spec.name


# --- seed ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,problem", [(-1, "out of range"), (True, "wrong type"), (1.5, "wrong type")])
def test_seed_must_be_a_non_negative_integer(value, problem):
    with pytest.raises(MVExtError, match=f"'seed' .*{problem}"):
        validate_raw_settings({"seed": value}, WHERE)
    assert resolve_trainer_settings({"seed": 0}, WHERE).seed == 0
    assert resolve_trainer_settings(None, WHERE).seed is None


# --- changes since a checkpoint -------------------------------------------------------------------------------------

def test_differences_name_every_changed_key_with_old_and_new_value():
    old = resolve_trainer_settings({"num_epochs": 100}, WHERE, {"optimizer": "adan"}).record()
    new = resolve_trainer_settings({"num_epochs": 200}, WHERE, {"optimizer": "adan"})
    # Adan's default warmup is 5 % of num_epochs: editing num_epochs moves it
    assert new.differences(old) == {"num_epochs": "  num_epochs: 100 -> 200 (plans)",
                                    "warmup_epochs": "  warmup_epochs: 5 -> 10 (default)"}
    assert new.differences(new.record()) == {}
    partial = {"values": {k: v for k, v in old["values"].items() if k not in ("seed", "num_epochs")}}
    partial["values"]["retired_key"] = 1
    assert set(new.differences(partial)) == {"num_epochs", "warmup_epochs", "retired_key"}, \
        "a key missing from the record is listed only if the plans set it"


# --- defining keys: a plans value that contradicts the trainer's name is refused ----------------------------------

ARCH = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet", "arch_kwargs": {},
        "_kw_requires_import": []}


class _NnUNetInitReached(Exception):
    pass


@pytest.fixture
def no_nnunet_init(monkeypatch):
    """nnUNetTrainer.__init__ (which creates folders) raises instead: a refusal must come before it."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    def reached(self, *args, **kwargs):
        raise _NnUNetInitReached

    monkeypatch.setattr(nnUNetTrainer, "__init__", reached)


def _build(trainer_class, settings):
    import torch

    plans = {"plans_name": "p", "dataset_name": "Dataset1_x",
             "configurations": {"c": {"architecture": ARCH, "trainer_settings": settings}}}
    trainer_class(plans, "c", 0, {}, torch.device("cpu"))


@pytest.mark.parametrize("trainer,key,value,defined", [
    ("adan_trainer.nnUNetTrainerMVAdan", "optimizer", "sgd", "adan"),
    ("dice_loss_trainer.nnUNetTrainerMVDiceLoss", "loss", "dice_ce", "dice"),
])
def test_contradicting_a_defining_key_is_refused_before_nnunet_creates_anything(no_nnunet_init, trainer, key, value,
                                                                               defined):
    import importlib

    module, name = trainer.split(".")
    trainer_class = getattr(importlib.import_module(f"nnunet_mvext.trainers.{module}"), name)
    with pytest.raises(MVExtError) as e:
        _build(trainer_class, {key: value})
    msg = str(e.value)
    assert f"key '{key}' is {value!r}" in msg and f"{name} is the trainer for {key} = {defined!r}" in msg
    assert "configuration 'c' of plans 'p'" in msg and "-tr nnUNetTrainerMV, which takes" in msg
    with pytest.raises(_NnUNetInitReached):  # repeating the defining value is fine
        _build(trainer_class, {key: defined})


def test_the_refusal_names_the_trainer_defined_by_the_plans_value(no_nnunet_init):
    from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

    class _FusionBase(nnUNetTrainerMV):
        defining_settings = ("fusion",)
        settings_scopes = ("fusion",)
        settings_defaults = {"oversample_foreground_percent": 1.0}

    class _FusionConcatForTest(_FusionBase):
        settings_defaults = {**_FusionBase.settings_defaults, "fusion": "concat"}

    class _FusionDSNForTest(_FusionBase):
        settings_defaults = {**_FusionBase.settings_defaults, "fusion": "dsn"}

    try:
        # the package's own fusion trainers answer first once they are imported (test order): either is right
        with pytest.raises(MVExtError, match="train with -tr (_FusionDSNForTest|nnUNetTrainerFusionDSN), the trainer "
                                             "for fusion = 'dsn'"):
            _build(_FusionConcatForTest, {"fusion": "dsn"})
        with pytest.raises(MVExtError, match="train with -tr (_FusionBase, which takes 'fusion' from the plans|"
                                             "nnUNetTrainerFusionDecision, the trainer for fusion = 'decision')"):
            _build(_FusionConcatForTest, {"fusion": "decision"})
        # a non-defining default (oversample_foreground_percent) may be changed by the plans; the abstract base
        # (no 'fusion' default) defines nothing
        with pytest.raises(_NnUNetInitReached):
            _build(_FusionConcatForTest, {"oversample_foreground_percent": 0.5})
        with pytest.raises(_NnUNetInitReached):
            _build(_FusionBase, {"fusion": "dsn"})
    finally:  # other tests' refusals must not suggest these classes
        del _FusionBase, _FusionConcatForTest, _FusionDSNForTest
        gc.collect()


def test_a_misspelled_defining_key_or_scope_fails_at_class_definition():
    from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

    with pytest.raises(TypeError, match="optimiser"):
        type("Bad", (nnUNetTrainerMV,), {"defining_settings": ("optimiser",)})
    with pytest.raises(TypeError, match="fusoin"):
        type("Bad", (nnUNetTrainerMV,), {"settings_scopes": ("fusoin",)})
