"""The one MBTFE/EAB knob table: checks that name the key, explicit resolved values, the copy in the docs
(docs/how_to/mbtfe_adan_dice.md)."""

import os
from pathlib import Path

import pytest

from nnunet_mvext.architectures.mbtfe_knobs import (
    DEFAULTS,
    KNOB_BY_NAME,
    SEED_KNOBS,
    knob_table_markdown,
    resolve_knobs,
)
from nnunet_mvext.architectures.mbtfe_unet import MBTFEUNet
from nnunet_mvext.errors import MVExtError

from test_mbtfe_unet import plan_kwargs

BOOL_KNOBS = [k for k, v in DEFAULTS.items() if isinstance(v, bool)]


@pytest.mark.parametrize("value", [4, 0, -3, 7.0, "7", True])
def test_even_or_non_integer_attention_kernel_is_refused(value):
    with pytest.raises(MVExtError, match="'eab_attention_kernel'.*odd integer"):
        resolve_knobs({"eab_attention_kernel": value}, 4)


@pytest.mark.parametrize("knob", BOOL_KNOBS)
@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_booleans_must_be_json_booleans(knob, value):
    with pytest.raises(MVExtError, match=f"'{knob}' is {value!r}; allowed: true or false"):
        resolve_knobs({knob: value}, 4)


def test_unknown_knob_is_named_with_the_allowed_ones():
    with pytest.raises(MVExtError, match="'mbtfe_stage' is not a knob.*mbtfe_stages"):
        resolve_knobs({"mbtfe_stage": [2], "features_per_stage": [4, 8]}, 4)


def test_resolved_values_are_explicit_and_plan_keys_are_left_alone():
    resolved = resolve_knobs({"n_stages": 6, "features_per_stage": [1] * 6}, 6)
    assert set(resolved) == set(KNOB_BY_NAME)
    assert resolved["mbtfe_stages"] == [2, 3, 4] and resolved["eab_stages"] == 3
    assert resolve_knobs({"mbtfe_stages": "all"}, 3)["mbtfe_stages"] == [0, 1, 2]
    assert resolve_knobs(resolved, 6) == resolved  # resolving twice changes nothing


def test_network_keeps_the_resolved_knobs_and_builds_the_same_from_them():
    kwargs = plan_kwargs(5)
    net = MBTFEUNet(**kwargs, **SEED_KNOBS)
    again = MBTFEUNet(**kwargs, **net.knobs)
    assert net.knobs["mbtfe_stages"] == [0, 1, 2, 3, 4]
    assert list(net.state_dict()) == list(again.state_dict())


def test_network_refuses_an_even_attention_kernel_before_building():
    with pytest.raises(MVExtError, match="'eab_attention_kernel' is 4"):
        MBTFEUNet(**plan_kwargs(4), eab_attention_kernel=4)


def test_docs_knob_table_is_the_spec():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    page = Path(os.path.join(root, "docs", "how_to", "mbtfe_adan_dice.md")).read_text()
    table = page.split("<!-- mbtfe-knob-table:start -->\n", 1)[1].split("\n<!-- mbtfe-knob-table:end", 1)[0]
    assert table.strip() == knob_table_markdown().strip()
