"""missing_phases.json: read back as written, mapped to channels, and refused by case and key when malformed."""

import json

import pytest

from nnunet_mvext.classification.missing_phases import missing_channels, read_missing_phases, write_missing_phases
from nnunet_mvext.errors import MVExtError


@pytest.fixture()
def dataset(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2WI", "1": "In Phase", "2": "C+A"}}))
    return tmp_path


def test_round_trip_and_channels(dataset):
    write_missing_phases(str(dataset), {"b_1": ["C+A", "T2WI"], "a_0": ["In Phase"], "c": []})
    assert read_missing_phases(str(dataset)) == {"a_0": ["In Phase"], "b_1": ["C+A", "T2WI"]}
    assert missing_channels(str(dataset)) == {"a_0": [1], "b_1": [0, 2]}


def test_no_record_means_nothing_is_missing(dataset):
    assert read_missing_phases(str(dataset)) == {} and missing_channels(str(dataset)) == {}


@pytest.mark.parametrize("record, message", [
    ({"a": ["In_Phase"]}, "case 'a' names 'In_Phase', not a channel name of dataset.json"),
    ({"a": "T2WI"}, "case 'a' has 'T2WI'; expected a non-empty list"),
    ({"a": []}, "expected a non-empty list"),
    ({"a": ["T2WI", "T2WI"]}, "case 'a' names T2WI more than once"),
    ({"a": ["T2WI", "In Phase", "C+A"]}, "case 'a' misses every phase"),
    (["a"], "expected an object"),
])
def test_refuses_a_malformed_record(dataset, record, message):
    (dataset / "missing_phases.json").write_text(json.dumps(record))
    with pytest.raises(MVExtError) as error:
        read_missing_phases(str(dataset))
    assert message in str(error.value)
