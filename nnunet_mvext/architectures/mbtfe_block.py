"""MBTFE: multi-branch feature extraction with learned per-sample branch weights.

Input ``x`` (B, C, *S) from an encoder stage. Four branches with receptive fields 1, 3, 5 and 7 (in units of the
stage's kernel, so an anisotropic kernel such as [1, 3, 3] stays anisotropic):

- ``cascade`` (default): ``f_1 = g_1(x)`` with a 1x1 conv, and one chain ``f_3 = g_k(x)``, ``f_5 = g_k(f_3)``,
  ``f_7 = g_k(f_5)`` whose intermediate outputs are the three larger branches: 3 convs instead of 6.
- ``parallel`` (the seed): independent branches of 1, 2 and 3 stacked kxk convs.

Each ``g`` is conv -> norm -> nonlinearity with the plan's ops. Weights, after selective-kernel attention
(Li et al., "Selective Kernel Networks", CVPR 2019; ``timm.layers.selective_kernel``)::

    u = sum_k f_k                      (B, C, *S)
    z = mean_S(u)                      (B, C)
    h = nonlin(fc_reduce(z))           (B, H),  H = max(C // reduction, min_hidden)
    a = softmax_k(fc_select(h))        (B, K) for weighting="branch" (the seed), (B, K, C) for "channel" (SK)
    y = sum_k a_k * f_k                (B, C, *S)
    out = x + gamma * y                (residual=True, default; gamma a learnable scalar, 0 at init)
    out = y                            (residual=False, the seed)

Departures and why: the seed had no nonlinearity between the two FC layers (they collapse into one linear map);
selective-kernel attention puts a BatchNorm there, which we leave out because nnU-Net trains with batch size 2 and
an InstanceNorm is undefined on a (B, H) vector. The residual scale ``gamma`` starts at zero (as ReZero, Bachlechner
et al., 2020, and SkipInit, De & Smith, NeurIPS 2020), so at initialisation the block is exactly the identity and a
U-Net with MBTFE computes what the plain U-Net computes; ``gamma`` gets a gradient from the first step
(``<dL/dout, y>``) and the branches from the step after. Measured on ``plan_kwargs(smoke=True)`` of
``benchmarks/mbtfe_step_time.py`` (4 stages 8..64) after ``torch.manual_seed(0)`` and nnU-Net's
``InitWeights_He(1e-2)``, input ``randn(2, 1, 32, 32, 32)`` after ``torch.manual_seed(1)``: the previous
``out = x + y`` (``gamma = 1``) changed the stage-2 block's input by 74 % of its norm (``||out - x|| / ||x||``); with
``gamma`` the change is 0 (``tests/architectures/test_mbtfe_init.py`` checks 0 on an anisotropic plan). ``gamma`` is
a plain parameter, not a conv, so nnU-Net's re-initialisation leaves it at zero.
"""

from __future__ import annotations

from typing import Sequence, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from torch import nn

from nnunet_mvext.architectures.mbtfe_knobs import check_knob


class MBTFEBlock(nn.Module):
    """Multi-branch feature extraction (equations in the module docstring). Shape preserving: (B, C, *S)."""

    num_branches = 4

    def __init__(self, conv_op: Type[nn.Module], channels: int, kernel_size: Union[int, Sequence[int]],
                 conv_bias: bool = True, norm_op: Type[nn.Module] = None, norm_op_kwargs: dict = None,
                 nonlin: Type[nn.Module] = None, nonlin_kwargs: dict = None, branch_design: str = "cascade",
                 weighting: str = "branch", reduction: int = 4, min_hidden: int = 8, residual: bool = True):
        super().__init__()
        for name, value in (("mbtfe_branch_design", branch_design), ("mbtfe_weighting", weighting),
                            ("mbtfe_reduction", reduction), ("mbtfe_residual", residual)):
            check_knob(name, value)
        self.channels = channels
        self.branch_design = branch_design
        self.weighting = weighting
        self.residual = residual
        kernel_size = maybe_convert_scalar_to_list(conv_op, kernel_size)

        def unit(k):
            return ConvDropoutNormReLU(conv_op, channels, channels, k, 1, conv_bias, norm_op, norm_op_kwargs, None,
                                       None, nonlin, nonlin_kwargs)

        self.branch_1 = unit([1] * len(kernel_size))
        if branch_design == "cascade":
            self.chain = nn.ModuleList([unit(kernel_size) for _ in range(3)])
        else:
            self.branches = nn.ModuleList([nn.Sequential(*[unit(kernel_size) for _ in range(depth)])
                                           for depth in (1, 2, 3)])
        hidden = max(channels // reduction, min_hidden)
        self.fc_reduce = nn.Linear(channels, hidden)
        self.act = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.ReLU(inplace=True)
        out = self.num_branches * (channels if weighting == "channel" else 1)
        self.fc_select = nn.Linear(hidden, out)
        self.gamma = nn.Parameter(torch.zeros(1)) if residual else None

    def branch_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[f_1, f_3, f_5, f_7]``, each (B, C, *S)."""
        outputs = [self.branch_1(x)]
        if self.branch_design == "cascade":
            h = x
            for unit in self.chain:
                h = unit(h)
                outputs.append(h)
        else:
            outputs += [branch(x) for branch in self.branches]
        return outputs

    def branch_weights(self, branches: list[torch.Tensor]) -> torch.Tensor:
        """Softmax weights over the branches: (B, K) or (B, K, C)."""
        u = branches[0]
        for f in branches[1:]:
            u = u + f
        z = u.mean(dim=tuple(range(2, u.ndim)))
        logits = self.fc_select(self.act(self.fc_reduce(z)))
        if self.weighting == "channel":
            logits = logits.view(z.shape[0], self.num_branches, self.channels)
        return torch.softmax(logits, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = self.branch_outputs(x)
        weights = self.branch_weights(branches)
        spatial = (1,) * (x.ndim - 2)
        y = None
        for k, f in enumerate(branches):
            w = weights[:, k].reshape(x.shape[0], -1, *spatial)
            y = f * w if y is None else y + f * w
        return x + self.gamma * y if self.residual else y

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """What nnU-Net counts for its own blocks: one (C, *S) map per conv output (4 convs for the cascade, 7 for
        the parallel design); norms, nonlinearities, sums and the two small FC layers are not counted, as nnU-Net
        does not count its norms and nonlinearities."""
        per_map = np.prod([self.channels, *input_size], dtype=np.int64)
        n_convs = 1 + (3 if self.branch_design == "cascade" else 6)
        return np.int64(per_map * n_convs)
