"""A short CPU training of MultiViewFusionNet on the shape data: three views beat each single view on held-out cases.

The shape data (:mod:`nnunet_mvext.synthetic.shapes`) is built so that view a cannot tell ``round`` from
``spike_axis{a}``: a single view is capped at 0.75 accuracy with balanced classes, two or three views are not. The
network, its slabs and its heads are the ones the multi-view trainers build; the nnU-Net loop around them is covered
by ``tests/e2e/test_multiview_cli.py``, so this trains on cached volumes to stay within CI's budget.
"""

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_mvext.architectures.multiview_fusion_net import MultiViewFusionNet
from nnunet_mvext.synthetic.shapes import SHAPE_CLASSES, make_shape_case

SHAPE = (32, 32, 32)
STEPS, BATCH, LR = 300, 16, 1e-2  # lr 3e-3: not learnt within 150 steps (held-out accuracy 0.53 and 0.48)


def _plan():
    kw = dict(n_stages=3, features_per_stage=[8, 16, 32], conv_op=nn.Conv3d, kernel_sizes=[[3, 3, 3]] * 3,
              strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[2, 2, 2], n_conv_per_stage_decoder=[1, 1],
              conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, dropout_op=None,
              dropout_op_kwargs=None, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    return "dynamic_network_architectures.architectures.unet.PlainConvUNet", kw


def _cases(n: int, seed: int):
    """(x (n, 1, *SHAPE), lesion masks (n, 1, *SHAPE), classes (n,)), classes balanced."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(SHAPE_CLASSES)
    images, masks = [], []
    for label in labels:
        image, seg, _, _ = make_shape_case(SHAPE, (1.0, 1.0, 1.0), int(label), rng)
        images.append(image)
        masks.append(seg == 2)
    x = torch.from_numpy(np.stack(images)[:, None]).float()
    x = (x - x.mean()) / x.std()  # nnU-Net's z-score, over the data set
    return x, torch.from_numpy(np.stack(masks)[:, None]).float(), torch.from_numpy(labels).long()


@pytest.fixture(scope="module")
def data():
    return _cases(128, seed=0), _cases(64, seed=1)


def _held_out_accuracy(views, data, seed: int) -> float:
    (x, m, y), (xt, mt, yt) = data
    name, kw = _plan()
    torch.manual_seed(seed)
    net = MultiViewFusionNet(name, kw, 1, len(SHAPE_CLASSES), "concat", views=views)
    net.classification_output = True
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(STEPS):
        idx = torch.randperm(len(y), generator=generator)[:BATCH]
        _, out = net(x[idx], m[idx])
        loss = net.head.loss(out, y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        _, out = net(xt, mt)
    return float((out["logits"].argmax(1) == yt).float().mean())


def test_three_views_beat_each_single_view_on_held_out_cases(data):
    """Held-out accuracy measured for torch seeds 0, 1, 2: three views 0.906, 0.938, 0.906; the best single view
    0.672 (axial), 0.672 (axial), 0.688 (axial); chance 0.25, the single-view cap 0.75. About 30 s on 2 CPU cores."""
    three = _held_out_accuracy(("axial", "coronal", "sagittal"), data, seed=0)
    single = {v: _held_out_accuracy((v,), data, seed=0) for v in ("axial", "coronal", "sagittal")}
    assert three > max(single.values()) and three > 0.75, (three, single)
