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


def test_a_phase_is_absent_when_any_of_its_channels_is_missing():
    from nnunet_mvext.classification.missing_phases import absent_phases

    assert absent_phases([1], [[0], [1], [2]]) == [False, True, False]
    assert absent_phases([3], [[0, 1], [2, 3]]) == [False, True]
    assert absent_phases([], [[0], [1]]) == [False, False]


def test_policy_refuse_names_the_cases_and_the_setting():
    from nnunet_mvext.classification.missing_phases import refuse_missing

    refuse_missing({"other": [1]}, ["case_a"], "dataset X")          # not among the cases: nothing to refuse
    with pytest.raises(MVExtError, match=r"1 case\(s\) miss a phase \(case_a; .*'missing_phases' is 'refuse'"):
        refuse_missing({"case_a": [1]}, ["case_a", "case_b"], "dataset X")


def test_the_preprocessed_copy_of_the_record_wins_over_the_raw_one(tmp_path):
    from nnunet_mvext.classification.missing_phases import dataset_record

    for name, missing in (("pre", ["b"]), ("raw", ["a"])):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "a", "1": "b"}}))
        (folder / "missing_phases.json").write_text(json.dumps({"case_1": missing}))
    assert dataset_record(str(tmp_path / "pre"), str(tmp_path / "raw")) == {"case_1": [1]}
    assert dataset_record(str(tmp_path / "none"), str(tmp_path / "raw")) == {"case_1": [0]}
    assert dataset_record(str(tmp_path / "none")) == {}


def _input_folder(tmp_path, record):
    images = tmp_path / "imagesTs"
    images.mkdir()
    (tmp_path / "missing_phases.json").write_text(json.dumps(record))
    return str(images)


def test_predict_cls_leaves_missing_phases_out_under_zero_and_refuses_under_refuse(tmp_path):
    from nnunet_mvext.classification.inference import input_absent_phases

    images = _input_folder(tmp_path, {"case_1": ["C+A"], "case_9": ["T2WI"]})
    channels = {"0": "T2WI", "1": "C+A", "2": "C+V"}
    info = {"missing_phases": "zero", "phase_channels": [[0], [1], [2]]}
    assert input_absent_phases(images, None, channels, info, ["case_1", "case_2"]) == {"case_1": [False, True, False]}
    with pytest.raises(MVExtError, match=r"case_1.*'missing_phases' is 'refuse'"):
        input_absent_phases(images, None, channels, {**info, "missing_phases": "refuse"}, ["case_1", "case_2"])
    # a model from before the setting counts as 'refuse'
    with pytest.raises(MVExtError, match="refuse"):
        input_absent_phases(images, None, channels, {"phase_channels": [[0], [1], [2]]}, ["case_1"])
    with pytest.raises(MVExtError, match="--missing-phases .* is not a file"):
        input_absent_phases(images, str(tmp_path / "nope.json"), channels, info, ["case_1"])


def test_a_fusion_trainer_with_policy_refuse_stops_before_any_folder(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from nnunetv2 import paths

    from nnunet_mvext.trainers import fusion_trainers

    raw = tmp_path / "raw" / "Dataset1_X"
    raw.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "a", "1": "b"}}))
    (raw / "missing_phases.json").write_text(json.dumps({"case_1": ["b"]}))
    monkeypatch.setattr(paths, "nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setattr(paths, "nnUNet_preprocessed", str(tmp_path / "pre"))
    trainer = object.__new__(fusion_trainers.nnUNetTrainerFusionABAF)
    monkeypatch.setattr(fusion_trainers.nnUNetTrainerFusionABAF, "describe_model",
                        classmethod(lambda cls, *a: {"phase_channels": [[0], [1]]}))
    dataset_json = {"classification": {"labels": {"case_1": 0, "case_2": 1}}}
    with pytest.raises(MVExtError, match=r"case_1.*'missing_phases' is 'refuse'"):
        trainer.check_before_nnunet_init({"dataset_name": "Dataset1_X"}, "3d_fullres", 0, dataset_json,
                                         SimpleNamespace(missing_phases="refuse", pretrained_checkpoint=None))
    assert not (tmp_path / "results").exists()
    monkeypatch.setattr(fusion_trainers, "_check_other_folds", lambda *a: None)
    trainer.check_before_nnunet_init({"dataset_name": "Dataset1_X"}, "3d_fullres", 0, dataset_json,
                                     SimpleNamespace(missing_phases="zero", pretrained_checkpoint=None))
    assert trainer.missing_record == {"case_1": [1]}
