"""Initialise a ``MultiPhaseFusionNet`` from a segmentation model trained on the same plan (``pretrained_checkpoint``).

nnU-Net's ``-pretrained_weights`` requires identical keys and cannot map one encoder onto P phase encoders, so the
fusion trainers read the checkpoint themselves:

- every phase encoder ``encoders.p.*`` receives the segmentation model's ``encoder.*``; its first convolution takes the
  input-channel slice of the phase's channels (``W[:, phase_channels[p]]``); with a shared encoder, the mean of the
  phases' slices;
- the decoder ``decoder.*`` receives the model's decoder (same plan: same shapes);
- the 1x1 skip fusions are set to the mean of the phases (``W_i = [I/P, ..., I/P]``), so the decoder first sees the
  average of the phase skips, as close as possible to the single encoder it was trained with;
- the classification head starts from scratch.

Every tensor that is not loaded is named in the returned log lines.
"""

from __future__ import annotations

import torch

from nnunet_mvext.errors import MVExtError


def _first_conv_slice(source: torch.Tensor, target_shape: torch.Size, groups: list[list[int]], phase: int,
                      shared: bool):
    if source.ndim < 3 or source.shape[0] != target_shape[0] or source.shape[2:] != target_shape[2:]:
        return None
    if shared:
        slices = [source[:, g] for g in groups]
        return torch.stack(slices).mean(0) if all(s.shape == target_shape for s in slices) else None
    sliced = source[:, groups[phase]]
    return sliced if sliced.shape == target_shape else None


def load_segmentation_weights(net, checkpoint_path: str) -> list[str]:
    """Copy what fits from the segmentation checkpoint into ``net``; returns the log lines."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    source = checkpoint.get("network_weights") if isinstance(checkpoint, dict) else None
    if not isinstance(source, dict) or not any(k.startswith("encoder.") for k in source):
        raise MVExtError(f"trainer_settings 'pretrained_checkpoint' {checkpoint_path} holds no segmentation network "
                         f"with an 'encoder' (expected an nnU-Net checkpoint of a PlainConvUNet/ResidualEncoderUNet).")
    target = net.state_dict()
    loaded, sliced, skipped = {}, [], []
    for p in range(len(net.encoders)):
        for key, value in source.items():
            if not key.startswith("encoder."):
                continue
            name = f"encoders.{p}.{key[len('encoder.'):]}"
            if name not in target:
                skipped.append(key)
            elif target[name].shape == value.shape:
                loaded[name] = value
            else:
                part = _first_conv_slice(value, target[name].shape, net.phase_channels, p, net.shared_encoder)
                if part is None:
                    skipped.append(f"{key} (shape {tuple(value.shape)} vs {tuple(target[name].shape)})")
                else:
                    loaded[name] = part
                    sliced.append(name)
    for key, value in source.items():
        if key.startswith("decoder.") and not key.startswith("decoder.encoder."):
            if key in target and target[key].shape == value.shape:
                loaded[key] = value
            else:
                skipped.append(key)
    for name in list(loaded):  # the decoder's reference to the first encoder shares its tensors
        if name.startswith("encoders.0."):
            alias = "decoder.encoder." + name[len("encoders.0."):]
            if alias in target:
                loaded[alias] = loaded[name]
    net.load_state_dict({**target, **loaded})
    if net.skip_fusion is not None:
        with torch.no_grad():
            n_phases = len(net.phase_channels)
            for fuse in net.skip_fusion:
                c = fuse.out_channels
                eye = torch.eye(c).reshape(c, c, *[1] * (fuse.weight.ndim - 2)) / n_phases
                fuse.weight.copy_(torch.cat([eye] * n_phases, dim=1))
                fuse.bias.zero_()
    not_loaded = sorted({k.split(".")[0] for k in target if k not in loaded})
    lines = [f"pretrained_checkpoint {checkpoint_path}: loaded {len(loaded)} of {len(target)} tensors",
             f"  first convolutions sliced to the phases' input channels: {', '.join(sliced) or 'none'}",
             f"  not loaded (trained from scratch): {', '.join(not_loaded)}"
             + (" (skip fusion set to the mean of the phases)" if net.skip_fusion is not None else "")]
    if skipped:
        lines.append(f"  checkpoint tensors without a match: {', '.join(skipped[:20])}"
                     + (" ..." if len(skipped) > 20 else ""))
    return lines
