import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.synthetic.shapes import SHAPE_CLASSES, generate_shape_dataset, make_shape_case


@pytest.mark.parametrize("shape,spacing", [((32, 32, 32), (1.0, 1.0, 1.0)), ((12, 40, 40), (3.0, 0.8, 0.8))])
def test_each_view_misses_exactly_the_spike_along_its_own_axis(shape, spacing):
    rng = np.random.default_rng(0)
    for label in range(len(SHAPE_CLASSES)):
        for _ in range(3):
            image, seg, spike, truth = make_shape_case(shape, spacing, label, rng)
            assert image.shape == seg.shape == spike.shape == shape and image.dtype == np.float32
            centre = [int(round(c)) for c in truth["lesion_centre"]]
            assert seg[tuple(centre)] == 2 and not (spike & (seg == 2)).any()
            # which central planes (view a: the plane x_a = centre_a) the spike meets
            seen = [bool(np.take(spike, centre[a], axis=a).any()) for a in range(3)]
            if label == 0:
                assert not spike.any() and truth["spike_axis"] is None
            else:
                axis = label - 1
                assert truth["spike_axis"] == axis
                assert seen == [a != axis for a in range(3)], (label, seen)
                # the rod lies on one side of the lesion along its axis, in the image only
                assert image[spike].mean() > image[seg == 1].mean() + 0.25


def test_layout_classes_and_refusals(tmp_path):
    ds = generate_shape_dataset(str(tmp_path), dataset_id=61, num_train=8, num_test=4, shape=(16, 16, 16), seed=1)
    meta = json.loads(Path(os.path.join(ds.folder, "dataset.json")).read_text())
    assert meta["channel_names"] == {"0": "T2"} and meta["labels"]["lesion"] == 2
    assert meta["classification"]["class_names"] == {str(k): n for k, n in enumerate(SHAPE_CLASSES)}
    train = meta["classification"]["labels"]
    assert sorted(np.bincount(list(train.values()), minlength=4)) == [2, 2, 2, 2]
    assert sorted(os.listdir(os.path.join(ds.folder, "imagesTr"))) == [f"{c}_0000.nii.gz" for c in sorted(train)]
    with open(os.path.join(ds.folder, "labelsTs", "classification.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["case_id", "class"] and sorted(int(r[1]) for r in rows[1:]) == [0, 1, 2, 3]
    assert len(os.listdir(os.path.join(ds.folder, "labelsTs"))) == 5
    truth = json.loads(Path(os.path.join(ds.folder, "cases.json")).read_text())
    assert {c["case_id"]: c["label"] for c in truth["Tr"]} == train
    with pytest.raises(MVExtError, match="already exists"):
        generate_shape_dataset(str(tmp_path), dataset_id=61)
    with pytest.raises(MVExtError, match="shape must be"):
        generate_shape_dataset(str(tmp_path), dataset_id=62, shape=(8, 32, 32))
