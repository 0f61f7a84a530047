"""``MultiPhaseFusionNet``: one nnU-Net encoder branch per contrast phase, late fusion for the case class, and a
U-Net decoder on the phase-fused skips for the segmentation.

Input ``x`` (B, C, *S) with the phases as nnU-Net channels; ``phase_channels`` groups channels into P phases
(default: one channel per phase). Each phase p goes through an encoder built from the plan (``PlainConvEncoder``
for ``PlainConvUNet`` plans, ``ResidualEncoder`` for ``ResidualEncoderUNet`` plans) giving skips ``s_p^i``
(B, C_i, *S_i) and the embedding ``f_p = mean_S(s_p^{n-1})`` (B, D), D = the bottleneck's channels.

- separate weights (default): P encoders;
- ``shared_encoder=True``: one encoder, phases folded into the batch, (B, P*c, *S) -> (B*P, c, *S): one call.

Segmentation: skips fused per stage by a 1x1 conv, ``s^i = W_i [s_1^i; ...; s_P^i]`` (B, C_i, *S_i), then nnU-Net's
``UNetDecoder``. ``forward(x)`` returns the segmentation output exactly like ``PlainConvUNet`` (so nnU-Net's
trainer loop, ``nnUNetv2_predict`` and its sliding window work unchanged); ``forward_with_classification(x)``
returns ``(segmentation, head_output)`` with the head output of :mod:`phase_fusion_heads`. While the attribute
``classification_output`` is True, ``forward`` returns that pair too: the trainer sets it for its training step so
that the call goes through DDP's ``forward`` (gradient synchronisation), and resets it afterwards.
``segmentation=False`` builds no skip fusion and no decoder (classification only): the segmentation output is then
None and a plain ``forward`` raises an error saying so.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnunet_mvext.architectures.phase_fusion_heads import build_head
from nnunet_mvext.errors import MVExtError

ENCODERS = {"PlainConvUNet": PlainConvEncoder, "ResidualEncoderUNet": ResidualEncoder}
DECODER_ONLY_KWARGS = ("n_conv_per_stage_decoder", "deep_supervision", "num_classes")


def default_phase_channels(num_input_channels: int) -> list[list[int]]:
    return [[c] for c in range(num_input_channels)]


def validate_phase_channels(phase_channels: Sequence[Sequence[int]], num_input_channels: int,
                            shared_encoder: bool) -> list[list[int]]:
    groups = [list(g) for g in phase_channels]
    flat = [c for g in groups for c in g]
    if not groups or len(set(flat)) != len(flat) or not all(0 <= c < num_input_channels for c in flat):
        raise MVExtError(f"trainer_settings 'phase_channels' {groups} must group channels of 0..{num_input_channels - 1}"
                         f" into phases, each channel at most once (channels left out are not used; one group "
                         f"gives a single-phase model).")
    if shared_encoder and len({len(g) for g in groups}) != 1:
        raise MVExtError(f"trainer_settings 'shared_encoder' needs phases of equal size; 'phase_channels' is {groups}.")
    return groups


class MultiPhaseFusionNet(nn.Module):
    def __init__(self, encoder_class_name: str, arch_kwargs: dict, num_input_channels: int, num_seg_classes: int,
                 num_case_classes: int, fusion: str = "abaf", phase_channels: Optional[Sequence[Sequence[int]]] = None,
                 shared_encoder: bool = False, deep_supervision: bool = True, head_options: Optional[dict] = None,
                 segmentation: bool = True):
        super().__init__()
        short = encoder_class_name.split(".")[-1]
        if short not in ENCODERS:
            raise MVExtError(f"The plan's network_class_name '{encoder_class_name}' has no known encoder; allowed: "
                             f"{', '.join(ENCODERS)}.")
        groups = validate_phase_channels(phase_channels or default_phase_channels(num_input_channels),
                                         num_input_channels, shared_encoder)
        self.phase_channels = groups
        self.shared_encoder = shared_encoder
        kw = {k: v for k, v in arch_kwargs.items() if k not in DECODER_ONLY_KWARGS}
        if short == "ResidualEncoderUNet":
            kw.pop("n_conv_per_stage", None)
        encoder_class = ENCODERS[short]

        def encoder(channels: int):
            return encoder_class(input_channels=channels, return_skips=True, **kw)

        n_enc = 1 if shared_encoder else len(groups)
        self.encoders = nn.ModuleList([encoder(len(groups[i])) for i in range(n_enc)])
        template = self.encoders[0]
        conv_op = template.conv_op
        channels = list(template.output_channels)
        self.skip_fusion, self.decoder = None, None
        if segmentation:
            self.skip_fusion = nn.ModuleList([conv_op(c * len(groups), c, 1, bias=True) for c in channels])
            self.decoder = UNetDecoder(template, num_seg_classes, arch_kwargs["n_conv_per_stage_decoder"],
                                       deep_supervision)
        self.head = build_head(fusion, len(groups), channels[-1], num_case_classes, **(head_options or {}))
        self.num_case_classes = num_case_classes
        self.fusion = fusion
        self.classification_output = False

    def phase_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage skips with the phases stacked: stage i -> (B, P, C_i, *S_i)."""
        b, p = x.shape[0], len(self.phase_channels)
        if self.shared_encoder:
            index = torch.tensor([c for g in self.phase_channels for c in g], device=x.device)
            folded = x.index_select(1, index).reshape(b * p, -1, *x.shape[2:])
            return [s.reshape(b, p, *s.shape[1:]) for s in self.encoders[0](folded)]
        per_phase = [enc(x[:, g]) for enc, g in zip(self.encoders, self.phase_channels)]
        return [torch.stack(stage, dim=1) for stage in zip(*per_phase)]

    def forward_with_classification(self, x: torch.Tensor):
        skips = self.phase_skips(x)
        embeddings = skips[-1].mean(dim=tuple(range(3, skips[-1].ndim)))              # (B, P, D)
        if self.decoder is None:
            return None, self.head(embeddings)
        fused = [fuse(s.flatten(1, 2)) for fuse, s in zip(self.skip_fusion, skips)]
        return self.decoder(fused), self.head(embeddings)

    def forward(self, x: torch.Tensor):
        if self.classification_output:
            return self.forward_with_classification(x)
        if self.decoder is None:
            raise MVExtError("This fusion network was trained with trainer_settings 'segmentation': false and has no "
                             "segmentation output; use nnunet-mvext predict-cls.")
        skips = self.phase_skips(x)
        return self.decoder([fuse(s.flatten(1, 2)) for fuse, s in zip(self.skip_fusion, skips)])

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        assert len(input_size) == convert_conv_op_to_dim(self.encoders[0].conv_op)
        p = len(self.phase_channels)
        enc = self.encoders[0].compute_conv_feature_map_size(input_size) * p
        size, fusion = list(input_size), np.int64(0)
        for c, s in zip(self.encoders[0].output_channels, self.encoders[0].strides):
            size = [i // j for i, j in zip(size, s)]
            fusion += np.prod([c, *size], dtype=np.int64)
        if self.decoder is None:
            return np.int64(enc)
        return np.int64(enc + fusion + self.decoder.compute_conv_feature_map_size(input_size))

    @staticmethod
    def initialize(module):
        InitWeights_He(1e-2)(module)
