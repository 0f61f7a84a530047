import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.synthetic_dataset import generate_multiphase_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_multiphase_dataset(str(tmp_path_factory.mktemp("raw")), dataset_id=42, num_train=24, num_test=2,
                                       shape=(24, 24, 24))


def test_layout_follows_nnunet_raw_format(dataset):
    folder = dataset.folder
    meta = json.load(open(os.path.join(folder, "dataset.json")))
    assert meta["channel_names"] == {"0": "arterial", "1": "portal_venous", "2": "delayed"}
    assert meta["labels"] == {"background": 0, "organ": 1, "lesion": 2} and meta["numTraining"] == 24
    assert set(meta["classification"]["labels"].values()) == {0, 1}
    assert len(os.listdir(os.path.join(folder, "imagesTr"))) == 3 * 24
    seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "labelsTr", "case_000.nii.gz")))
    assert set(np.unique(seg)) == {0, 1, 2}
    img = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "imagesTr", "case_000_0000.nii.gz")))
    assert img.shape == (24, 24, 24)


def test_class_needs_more_than_one_phase(dataset):
    """Each single phase's lesion contrast overlaps between classes; the delayed-minus-arterial change does not."""
    cases = dataset.train_cases
    labels = np.array([c.label for c in cases])
    for phase in ("arterial", "portal_venous", "delayed"):
        values = np.array([getattr(c, phase) for c in cases])
        assert values[labels == 0].min() < values[labels == 1].max(), phase
    change = np.array([c.delayed - c.arterial for c in cases])
    assert change[labels == 1].max() < change[labels == 0].min()


def test_existing_dataset_is_not_overwritten(dataset):
    with pytest.raises(MVExtError, match="already exists"):
        generate_multiphase_dataset(os.path.dirname(dataset.folder), dataset_id=42)
