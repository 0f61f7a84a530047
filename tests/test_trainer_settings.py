import pytest

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.trainer_settings import SETTINGS, resolve_trainer_settings, validate_raw_settings

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
])
def test_bad_values_name_the_key_and_what_is_allowed(key, value, problem):
    with pytest.raises(MVExtError) as e:
        validate_raw_settings({key: value}, WHERE)
    assert f"'{key}'" in str(e.value) and problem in str(e.value)
    assert SETTINGS[key].allowed in str(e.value)


def test_warmup_must_be_shorter_than_training():
    with pytest.raises(MVExtError, match="'warmup_epochs' is 5 but num_epochs is 5"):
        resolve_trainer_settings({"num_epochs": 5, "warmup_epochs": 5}, WHERE)


def test_settings_object_must_be_a_mapping():
    with pytest.raises(MVExtError, match="must be a JSON object"):
        validate_raw_settings(["num_epochs", 3], WHERE)


def test_int_is_accepted_where_a_float_is_expected():
    assert resolve_trainer_settings({"initial_lr": 1}, WHERE).initial_lr == 1
