"""``PhaseConditionedNorm``: the plan's normalisation with one affine pair per phase, for an encoder shared by the
phases (:class:`~nnunet_mvext.architectures.multiphase_fusion_net.MultiPhaseFusionNet` with ``shared_encoder``).

The shared encoder sees the phases folded into the batch, ``(B, P*c, *S) -> (B*P, c, *S)``, sample ``b*P + p`` being
phase ``p`` of case ``b``. Every normalisation layer of that encoder becomes

    y_{b,p} = gamma_p * norm(x_{b,p}) + beta_p,      gamma, beta: (P, C)

with ``norm`` the plan's ``norm_op`` without its affine parameters (``InstanceNorm3d``: statistics per sample and
channel, so per phase anyway; ``BatchNorm3d``: statistics over the folded batch, shared by the phases). The
convolutions stay shared; each phase gets its own scale and shift of every feature (a sign flip included), which is
what an enhancement pattern that is bright in one phase and dark in another needs. This is conditional normalisation
(Dumoulin et al., "A learned representation for artistic style", ICLR 2017; per-domain normalisation in a shared
network: Chang et al., "Domain-specific batch normalization", CVPR 2019), here per contrast phase. Cost: 2 P C
parameters per layer and one multiply-add per voxel.

It is passed to the encoder as its ``norm_op`` (``norm_op_kwargs`` = ``{"norm_op": <plan's op>, "num_phases": P,
**<plan's kwargs>}``), the way ``dynamic_network_architectures`` blocks take their ops; the decoder, which runs on
the fused (B, ...) skips, keeps the plan's norm.
"""

from __future__ import annotations

from typing import Type

import torch
from torch import nn


class PhaseConditionedNorm(nn.Module):
    def __init__(self, num_features: int, norm_op: Type[nn.Module], num_phases: int, affine: bool = True,
                 **norm_op_kwargs):
        super().__init__()
        if num_phases < 1:
            raise ValueError(f"num_phases must be >= 1, got {num_phases}")
        self.num_phases = num_phases
        self.norm = norm_op(num_features, affine=False, **norm_op_kwargs)
        self.weight = nn.Parameter(torch.ones(num_phases, num_features))
        self.bias = nn.Parameter(torch.zeros(num_phases, num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B*P, C, *S), phase-major within each case -> same shape."""
        n, c = x.shape[:2]
        if n % self.num_phases:
            raise ValueError(f"PhaseConditionedNorm: batch {n} is not a multiple of the {self.num_phases} phases")
        y = self.norm(x).reshape(n // self.num_phases, self.num_phases, c, *x.shape[2:])
        shape = (1, self.num_phases, c) + (1,) * (x.ndim - 2)
        return (y * self.weight.reshape(shape) + self.bias.reshape(shape)).reshape(x.shape)
