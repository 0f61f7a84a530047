"""EAB: edge aggregation across the first encoder stages, gate-fused back into each stage's skip.

Inputs: the outputs ``s_0 … s_{N-1}`` of the first N encoder stages (default N = 3), ``s_i`` (B, C_i, *S_i), with the
plan's strides ``r_i`` between stage i-1 and i (anisotropic strides such as [1, 2, 2] are followed exactly).

1. Shared spatial attention (CBAM's spatial half, Woo et al., ECCV 2018; ``timm.layers.cbam``), one conv for all
   stages: ``SA(t) = t * sigmoid(conv_k([mean_c(t); max_c(t)]))``  (B, C, *S) -> (B, C, *S).
2. Aggregation downwards: ``d_0 = a_0``, ``d_i = [pool_{r_i}(d_{i-1}); a_i]`` with average pooling of kernel and
   stride ``r_i``; ``agg = nonlin(norm(conv_1x1(d_{N-1})))``  (B, C_{N-1}, *S_{N-1}).
3. Back up: ``u_i = convtranspose_{R_i}(agg)`` with ``R_i`` the product of the strides from stage i to N-1
   (a 1x1 conv for the last stage), ``G_i`` channels.
4. Gate per stage (attention gate, Oktay et al., 2018)::

       g_i = sigmoid(norm(psi(nonlin(norm(W_s s_i) + norm(u_i)))))      (B, 1, *S_i)
       out_i = s_i + gamma_i * (s_i * g_i - s_i)     (residual=True, default; gamma_i a learnable scalar, 0 at init)
       out_i = s_i * g_i                             (residual=False, the seed)

The decoder uses ``out_i`` as its skips. ``gamma_i = 1`` is the seed's attention gate; ``gamma_i = 0`` passes the skip
unchanged. Starting at zero (as ReZero, Bachlechner et al., 2020) makes the block the identity at initialisation:
the seed's gate, ``g ~ 0.5`` at init, halved every skip the decoder sees (``||out_i - s_i|| / ||s_i||`` = 0.52,
0.53, 0.56 for stages 0-2 with ``gamma = 1``, measured as in ``mbtfe_block``'s docstring; 0 with ``gamma`` at init,
``tests/architectures/test_mbtfe_init.py``). ``gamma_i`` is a plain parameter, so nnU-Net's re-initialisation of the
convs leaves it at zero.

Where the cost was and what we changed (the seed's EAB at full resolution dominated the step time):

- ``coarse=True`` (default): stage 0 is average-pooled to stage 1's resolution *before* the spatial attention
  (the seed attends at full resolution and pools afterwards), and stage 0's gate is computed at stage 1's
  resolution, then interpolated (1 channel) to full resolution and applied. Full resolution then only sees one
  pooling, one interpolation of a single channel and the element-wise gating: no norm, no conv.
- The seed projects ``u_i`` with a further 1x1 conv; a 1x1 conv after a transposed conv is a second linear map, so
  the transposed conv outputs the gate's ``G_i = max(C_i // 2, 8)`` channels directly (``fold_up_projection``).
- ``coarse=False, fold_up_projection=False`` is the seed layout, kept for ablations.
"""

from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import (
    convert_conv_op_to_dim,
    get_matching_convtransp,
    get_matching_pool_op,
)
from torch import nn

from nnunet_mvext.architectures.mbtfe_knobs import check_knob


class SpatialAttention(nn.Module):
    """``t * sigmoid(conv([mean_c t; max_c t]))``: (B, C, *S) -> (B, C, *S). One instance is shared by all stages."""

    def __init__(self, conv_op: Type[nn.Module], kernel_size: Sequence[int]):
        super().__init__()
        self.conv = conv_op(2, 1, kernel_size, padding=[k // 2 for k in kernel_size], bias=True)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        descriptor = torch.cat([t.mean(dim=1, keepdim=True), t.amax(dim=1, keepdim=True)], dim=1)
        return t * torch.sigmoid(self.conv(descriptor))


class EdgeGate(nn.Module):
    """``g = sigmoid(norm(psi(nonlin(norm(W_s s) + norm(P u)))))`` (B, 1, *S); ``P`` is identity when folded."""

    def __init__(self, conv_op, skip_channels: int, gate_channels: int, norm_op, norm_op_kwargs, nonlin,
                 nonlin_kwargs, fold_up_projection: bool):
        super().__init__()
        norm_op_kwargs = norm_op_kwargs or {}
        self.theta = conv_op(skip_channels, gate_channels, 1, bias=False)
        self.theta_norm = norm_op(gate_channels, **norm_op_kwargs)
        self.phi = None if fold_up_projection else conv_op(gate_channels, gate_channels, 1, bias=False)
        self.phi_norm = norm_op(gate_channels, **norm_op_kwargs)
        self.act = nonlin(**(nonlin_kwargs or {}))
        self.psi = conv_op(gate_channels, 1, 1, bias=True)
        self.psi_norm = norm_op(1, **norm_op_kwargs)

    def forward(self, s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        phi = u if self.phi is None else self.phi(u)
        h = self.act(self.theta_norm(self.theta(s)) + self.phi_norm(phi))
        return torch.sigmoid(self.psi_norm(self.psi(h)))


class EdgeAggregationBlock(nn.Module):
    """EAB over the first ``len(channels)`` encoder stages (equations in the module docstring)."""

    def __init__(self, conv_op: Type[nn.Module], channels: Sequence[int], strides: Sequence[Sequence[int]],
                 kernel_sizes: Sequence[Sequence[int]], norm_op: Type[nn.Module], norm_op_kwargs: dict,
                 nonlin: Type[nn.Module], nonlin_kwargs: dict, coarse: bool = True, fold_up_projection: bool = True,
                 attention_kernel: int = 7, residual: bool = True):
        super().__init__()
        n = len(channels)
        for name, value in (("eab_stages", n), ("eab_coarse", coarse), ("eab_fold_up_projection", fold_up_projection),
                            ("eab_attention_kernel", attention_kernel), ("eab_residual", residual)):
            check_knob(name, value, n_stages=len(strides))
        dim = convert_conv_op_to_dim(conv_op)
        self.channels = list(channels)
        self.strides = [list(s) for s in strides]  # strides[i]: from stage i-1 to stage i (strides[0] unused)
        if coarse and all(r == 1 for r in self.strides[1]):
            coarse = False  # stage 1 has stage 0's resolution: nothing to gain
        self.coarse = coarse
        self.fold_up_projection = fold_up_projection
        self.residual = residual
        norm_op_kwargs, nonlin_kwargs = norm_op_kwargs or {}, nonlin_kwargs or {}
        # attention kernel follows the plan's anisotropy: no extent along axes the stage-0 kernel does not convolve
        k0 = list(kernel_sizes[0]) if isinstance(kernel_sizes[0], (list, tuple)) else [kernel_sizes[0]] * dim
        self.attention = SpatialAttention(conv_op, [attention_kernel if k > 1 else 1 for k in k0])
        pool = get_matching_pool_op(conv_op, pool_type="avg")
        self.pools = nn.ModuleList([pool(kernel_size=s, stride=s) for s in self.strides[1:n]])
        self.fuse = nn.Sequential(conv_op(sum(channels), channels[-1], 1, bias=False),
                                  norm_op(channels[-1], **norm_op_kwargs), nonlin(**nonlin_kwargs))
        self.gate_channels = [max(c // 2, 8) for c in channels]
        transp = get_matching_convtransp(conv_op)
        self.up = nn.ModuleList()
        for i in range(n):
            source = 1 if (i == 0 and coarse) else i  # the resolution the gate of stage i is computed at
            factor = np.prod(np.array(self.strides[source + 1:n]), axis=0) if source < n - 1 else np.ones(dim, int)
            factor = [int(f) for f in factor]
            out_ch = self.gate_channels[i]
            if all(f == 1 for f in factor):
                self.up.append(conv_op(channels[-1], out_ch, 1, bias=False))
            else:
                self.up.append(transp(channels[-1], out_ch, factor, factor, bias=False))
        self.gates = nn.ModuleList([EdgeGate(conv_op, c, g, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs,
                                             fold_up_projection) for c, g in zip(channels, self.gate_channels)])
        self.gamma = nn.Parameter(torch.zeros(n)) if residual else None

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        n = len(self.channels)
        s0 = skips[0]
        s0_coarse = self.pools[0](s0) if self.coarse else None
        attended = [self.attention(s0_coarse if self.coarse else s0)]
        attended += [self.attention(s) for s in skips[1:n]]
        d = attended[0]
        for i in range(1, n):
            if not (i == 1 and self.coarse):
                d = self.pools[i - 1](d)
            d = torch.cat([d, attended[i]], dim=1)
        agg = self.fuse(d)
        out = []
        for i in range(n):
            s_gate = s0_coarse if (i == 0 and self.coarse) else skips[i]
            g = self.gates[i](s_gate, self.up[i](agg))
            if i == 0 and self.coarse:
                mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[s0.ndim - 2]
                g = F.interpolate(g, size=s0.shape[2:], mode=mode, align_corners=False)
            out.append(skips[i] + self.gamma[i] * (skips[i] * g - skips[i]) if self.residual else skips[i] * g)
        return out

    def compute_conv_feature_map_size(self, stage_sizes: Sequence[Sequence[int]]) -> np.int64:
        """What nnU-Net counts for its own blocks, one map per conv output; ``stage_sizes[i]`` is stage i's spatial
        size. Convs: the shared spatial attention (1 channel, once per stage), the 1x1 fusion, and per stage the
        upsampling, ``W_s`` (``theta``), the unfolded projection ``phi`` and ``psi`` (1 channel). Pooling, the
        interpolated gate, norms, nonlinearities and the gated skips are not counted, as nnU-Net does not count its
        norms and nonlinearities."""
        n = len(self.channels)
        vox = [np.prod(s, dtype=np.int64) for s in stage_sizes[:n]]
        gate_vox = [vox[1] if (i == 0 and self.coarse) else v for i, v in enumerate(vox)]
        total = np.int64(sum(gate_vox))                                              # attention conv, 1 channel
        total += self.channels[-1] * vox[n - 1]                                      # 1x1 fusion
        for i in range(n):
            g = self.gate_channels[i]
            total += (2 if self.fold_up_projection else 3) * g * gate_vox[i]         # up, theta(, phi)
            total += gate_vox[i]                                                     # psi
        return np.int64(total)
