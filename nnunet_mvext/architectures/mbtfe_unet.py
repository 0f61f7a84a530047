"""``MBTFEUNet``: nnU-Net's plain U-Net with MBTFE blocks in the encoder and EAB on the shallow skips.

Same constructor conventions as ``dynamic_network_architectures``' ``PlainConvUNet`` (so a plans file can name it and
every plan's channels, stage count, kernels, strides, conv/norm/nonlin types are used as they are), plus the knobs of
:mod:`nnunet_mvext.architectures.mbtfe_knobs` (``mbtfe_*``, ``eab_*``, ``channels_last``, ``activation_checkpointing``)
that a plans file sets in ``arch_kwargs``; the constructor checks them with that module's table and keeps the resolved
values in :attr:`MBTFEUNet.knobs`.

The seed layout (``mbtfe_stages`` = every stage, ``"parallel"``, ``mbtfe_residual=False``, ``eab_coarse=False``,
``eab_fold_up_projection=False``, ``eab_residual=False``) stays reachable for ablations; see
:data:`~nnunet_mvext.architectures.mbtfe_knobs.SEED_KNOBS`.
Why the defaults: the full-resolution stages dominate the cost (per voxel, stage i costs ~2**-i of stage 0 for
nnU-Net's doubling channels and halving resolution), so MBTFE starts at stage 2 and EAB keeps full-resolution work to
one pooling, one single-channel interpolation and the element-wise gating. The bottleneck gets no MBTFE: nnU-Net plans
it at 4-8 voxels per axis, where the 5- and 7-voxel branches see mostly padding, and at 320 channels its three convs
would add 8 M parameters for nothing multi-scale. See ``benchmarks/RESULTS.md`` for measurements.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim, maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.utils.checkpoint import checkpoint

from nnunet_mvext.architectures.edge_aggregation_block import EdgeAggregationBlock
from nnunet_mvext.architectures.mbtfe_block import MBTFEBlock
from nnunet_mvext.architectures.mbtfe_knobs import resolve_knobs
from nnunet_mvext.errors import MVExtError


def _as_list(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


class MBTFEUNet(AbstractDynamicNetworkArchitectures):
    """U-Net with MBTFE after selected encoder stages and EAB-gated shallow skips. Output as ``PlainConvUNet``."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: Union[int, List[int], Tuple[int, ...]],
                 conv_op: Type[nn.Module], kernel_sizes, strides, n_conv_per_stage, num_classes: int,
                 n_conv_per_stage_decoder, conv_bias: bool = False, norm_op: Optional[Type[nn.Module]] = None,
                 norm_op_kwargs: dict = None, dropout_op=None, dropout_op_kwargs: dict = None,
                 nonlin: Optional[Type[nn.Module]] = None, nonlin_kwargs: dict = None, deep_supervision: bool = False,
                 nonlin_first: bool = False, mbtfe_stages: Union[None, str, Sequence[int]] = None,
                 mbtfe_branch_design: str = "cascade", mbtfe_weighting: str = "branch", mbtfe_reduction: int = 4,
                 mbtfe_residual: bool = True, eab_stages: Optional[int] = None, eab_coarse: bool = True,
                 eab_fold_up_projection: bool = True, eab_attention_kernel: int = 7, eab_residual: bool = True,
                 channels_last: bool = False, activation_checkpointing: bool = False):
        super().__init__()
        #: every knob with its explicit value (``mbtfe_stages`` a list, ``eab_stages`` an integer)
        self.knobs = knobs = resolve_knobs(dict(
            mbtfe_stages=mbtfe_stages, mbtfe_branch_design=mbtfe_branch_design, mbtfe_weighting=mbtfe_weighting,
            mbtfe_reduction=mbtfe_reduction, mbtfe_residual=mbtfe_residual, eab_stages=eab_stages,
            eab_coarse=eab_coarse, eab_fold_up_projection=eab_fold_up_projection,
            eab_attention_kernel=eab_attention_kernel, eab_residual=eab_residual, channels_last=channels_last,
            activation_checkpointing=activation_checkpointing), n_stages)
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stages.0"
        self.keys_to_in_proj = ("encoder.stages.0.0.convs.0.all_modules.0", "encoder.stages.0.0.convs.0.conv")
        if norm_op is None or nonlin is None:
            raise MVExtError("MBTFEUNet needs the plan's 'norm_op' and 'nonlin' (arch_kwargs); got None.")
        n_conv_per_stage = _as_list(n_conv_per_stage, n_stages)
        n_conv_per_stage_decoder = _as_list(n_conv_per_stage_decoder, n_stages - 1)
        self.encoder = PlainConvEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                        n_conv_per_stage, conv_bias, norm_op, norm_op_kwargs, dropout_op,
                                        dropout_op_kwargs, nonlin, nonlin_kwargs, return_skips=True,
                                        nonlin_first=nonlin_first)
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision,
                                   nonlin_first=nonlin_first)
        channels = list(self.encoder.output_channels)
        kernels = [maybe_convert_scalar_to_list(conv_op, k) for k in _as_list(kernel_sizes, n_stages)]

        self.mbtfe_stages = knobs["mbtfe_stages"]
        self.mbtfe = nn.ModuleDict({str(i): MBTFEBlock(conv_op, channels[i], kernels[i], conv_bias, norm_op,
                                                       norm_op_kwargs, nonlin, nonlin_kwargs, mbtfe_branch_design,
                                                       mbtfe_weighting, mbtfe_reduction, residual=mbtfe_residual)
                                    for i in self.mbtfe_stages})
        eab_stages = knobs["eab_stages"]
        self.eab = None
        if eab_stages:
            self.eab = EdgeAggregationBlock(conv_op, channels[:eab_stages], self.encoder.strides[:eab_stages],
                                            kernels[:eab_stages], norm_op, norm_op_kwargs, nonlin, nonlin_kwargs,
                                            coarse=eab_coarse, fold_up_projection=eab_fold_up_projection,
                                            attention_kernel=eab_attention_kernel, residual=eab_residual)
        self.channels_last = channels_last
        self.activation_checkpointing = activation_checkpointing
        self._memory_format = {1: torch.contiguous_format, 2: torch.channels_last,
                               3: torch.channels_last_3d}[convert_conv_op_to_dim(conv_op)]
        if channels_last:
            self.to(memory_format=self._memory_format)

    def _run(self, module: nn.Module, *args):
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, x: torch.Tensor):
        if self.channels_last:
            x = x.contiguous(memory_format=self._memory_format)
        skips = []
        for i, stage in enumerate(self.encoder.stages):
            x = stage(x)
            if str(i) in self.mbtfe:
                x = self._run(self.mbtfe[str(i)], x)
            skips.append(x)
        if self.eab is not None:
            n = len(self.eab.channels)
            skips[:n] = self._run(self.eab, skips[:n])
        return self.decoder(skips)

    def stage_sizes(self, input_size: Sequence[int]) -> list[list[int]]:
        sizes, size = [], list(input_size)
        for s in self.encoder.strides:
            size = [i // j for i, j in zip(size, s)]
            sizes.append(size)
        return sizes

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """What nnU-Net's planner counts, one map per conv output: encoder + decoder (exactly as ``PlainConvUNet``)
        + every MBTFE block + EAB. ``tests/architectures/test_mbtfe_memory_estimate.py`` checks it against forward
        hooks on every conv."""
        assert len(input_size) == convert_conv_op_to_dim(self.encoder.conv_op), "give the spatial size only"
        total = self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)
        sizes = self.stage_sizes(input_size)
        for i, block in self.mbtfe.items():
            total += block.compute_conv_feature_map_size(sizes[int(i)])
        if self.eab is not None:
            total += self.eab.compute_conv_feature_map_size(sizes)
        return np.int64(total)

    @staticmethod
    def initialize(module):
        InitWeights_He(1e-2)(module)
