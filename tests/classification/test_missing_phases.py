"""missing_phases.json: read back as written, mapped to channels, and refused by case and key when malformed."""

import json
from pathlib import Path

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


CHANNELS = {"0": "T2WI", "1": "C+A", "2": "C+V"}
ZERO_INFO = {"missing_phases": "zero", "phase_channels": [[0], [1], [2]]}


def _write_cases(images, zero_channels: dict) -> dict:
    """Cases of three channel files (4^3 voxels; noise, or all zeros for the channels in ``zero_channels[case]``);
    returns ``{case: [files]}`` as predict-cls's input_cases does."""
    import numpy as np
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    cases = {}
    for case, zero in zero_channels.items():
        cases[case] = []
        for c in range(3):
            array = np.zeros((4, 4, 4), np.float32) if c in zero else rng.normal(100, 20, (4, 4, 4)).astype(np.float32)
            path = str(images / f"{case}_{c:04d}.nii.gz")
            sitk.WriteImage(sitk.GetImageFromArray(array), path)
            cases[case].append(path)
    return cases


def _input_folder(tmp_path, record, zero_channels=None):
    images = tmp_path / "imagesTs"
    images.mkdir()
    if record is not None:
        (tmp_path / "missing_phases.json").write_text(json.dumps(record))
    return str(images), _write_cases(images, zero_channels or {"case_1": [1], "case_2": []})


def test_predict_cls_leaves_missing_phases_out_under_zero_and_refuses_under_refuse(tmp_path):
    from nnunet_mvext.classification.inference import input_absent_phases

    images, cases = _input_folder(tmp_path, {"case_1": ["C+A"], "case_9": ["T2WI"]})
    assert input_absent_phases(images, None, CHANNELS, ZERO_INFO, cases) == {"case_1": [False, True, False]}
    with pytest.raises(MVExtError, match=r"case_1.*'missing_phases' 'refuse'"):
        input_absent_phases(images, None, CHANNELS, {**ZERO_INFO, "missing_phases": "refuse"}, cases)
    # a model from before the setting counts as 'refuse'
    with pytest.raises(MVExtError, match="refuse"):
        input_absent_phases(images, None, CHANNELS, {"phase_channels": [[0], [1], [2]]}, cases)
    with pytest.raises(MVExtError, match="--missing-phases .* is not a file"):
        input_absent_phases(images, str(tmp_path / "nope.json"), CHANNELS, ZERO_INFO, cases)


@pytest.mark.parametrize("record", [None, {"case_7": ["C+V"]}])
def test_an_all_zero_channel_without_a_record_is_a_missing_phase(tmp_path, caplog, record):
    """The cases copied away from their record (none beside the input folder, or one of other cases): the zero
    placeholder of case_1's C+A is left out under 'zero' with a warning naming the case and phase, refused under
    'refuse' before any model loads."""
    from nnunet_mvext.classification.inference import input_absent_phases

    images, cases = _input_folder(tmp_path, record, {"case_1": [1], "case_2": []})
    assert input_absent_phases(images, None, CHANNELS, ZERO_INFO, cases) == {"case_1": [False, True, False]}
    assert "1 input case(s) have all-zero channel files that no missing-phase record names (case_1: C+A)" \
        in caplog.text
    with pytest.raises(MVExtError, match=r"1 input case\(s\) miss a phase \(case_1\); 1 of them without a record, "
                                         r"found as all-zero channel files .*case_1: C\+A.*'missing_phases' 'refuse'"):
        input_absent_phases(images, None, CHANNELS, {**ZERO_INFO, "missing_phases": "refuse"}, cases)


def test_a_case_whose_every_phase_is_zero_or_recorded_missing_is_refused(tmp_path):
    from nnunet_mvext.classification.inference import input_absent_phases

    images, cases = _input_folder(tmp_path, {"case_1": ["T2WI"]}, {"case_1": [1, 2], "case_2": []})
    with pytest.raises(MVExtError, match=r"1 input case\(s\) miss every phase \(case_1;"):
        input_absent_phases(images, None, CHANNELS, ZERO_INFO, cases)


def test_an_explicit_record_that_names_no_input_case_is_refused(tmp_path):
    from nnunet_mvext.classification.inference import input_absent_phases

    images, cases = _input_folder(tmp_path, None, {"case_1": [], "case_2": []})
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"MR9_0": ["C+A"], "MR8_1": ["T2WI"]}))
    with pytest.raises(MVExtError, match=r"--missing-phases .*other.json names 2 case\(s\) \(MR8_1, MR9_0\), none "
                                         r"of them an input case .*\(case_1, case_2\)"):
        input_absent_phases(images, str(other), CHANNELS, ZERO_INFO, cases)
    other.write_text(json.dumps({"MR9_0": ["C+A"], "case_2": ["T2WI"]}))  # one of them is: used
    assert input_absent_phases(images, str(other), CHANNELS, ZERO_INFO, cases) == {"case_2": [True, False, False]}
    # the dataset's own record beside the input folder (import-lld's, which lists its training cases too) is the
    # right file even when none of the input cases misses a phase
    own = Path(images).parent / "missing_phases.json"
    own.write_text(json.dumps({"MR9_0": ["C+A"]}))
    assert input_absent_phases(images, str(own), CHANNELS, ZERO_INFO, cases) == {}


def test_an_unreadable_channel_file_is_refused_naming_the_case_and_file(tmp_path):
    from nnunet_mvext.classification.inference import input_absent_phases

    images, cases = _input_folder(tmp_path, None, {"case_1": [], "case_2": []})
    with open(cases["case_2"][1], "wb") as f:
        f.write(b"not an image")
    with pytest.raises(MVExtError, match=r"Input case 'case_2': .*case_2_0001.nii.gz cannot be read as an image"):
        input_absent_phases(images, None, CHANNELS, ZERO_INFO, cases)


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


def test_an_all_zero_channel_that_no_phase_reads_is_not_reported(tmp_path, caplog):
    from nnunet_mvext.classification.inference import input_absent_phases

    images, cases = _input_folder(tmp_path, None, {"case_1": [2], "case_2": []})
    info = {"missing_phases": "refuse", "phase_channels": [[0], [1]]}
    assert input_absent_phases(images, None, CHANNELS, info, cases) == {}
    assert "all-zero" not in caplog.text
