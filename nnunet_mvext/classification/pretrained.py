"""Initialise a ``MultiPhaseFusionNet`` from a segmentation model trained on the same plan (``pretrained_checkpoint``).

nnU-Net's ``-pretrained_weights`` requires identical keys and cannot map one encoder onto P phase encoders, so the
fusion trainers read the checkpoint themselves:

- every phase encoder ``encoders.p.*`` receives the segmentation model's ``encoder.*``; its first convolution takes the
  input-channel slice of the phase's channels (``W[:, phase_channels[p]]``); with a shared encoder, the mean of the
  phases' slices (with ``phase_specific_stages``, the first convolutions are per phase again); with ``phase_norm``
  every phase's affine pair starts from the model's norm (``(C,) -> (P, C)``);
- the decoder ``decoder.*`` receives the model's decoder (same plan: same shapes);
- the 1x1 skip fusions are set to the mean of the phases (``W_i = [I/P, ..., I/P]``), so the decoder first sees the
  average of the phase skips, as close as possible to the single encoder it was trained with;
- the classification head starts from scratch.

Every tensor that is not loaded is named in the returned log lines.

**One checkpoint per fold.** A segmentation model of fold 0 was trained on the validation cases of folds 1-4: its
encoders, and the decoder that localises those cases, carry them into the cross-validation of the fusion model.
:func:`resolve_pretrained_checkpoint` therefore expands a ``{fold}`` placeholder in the path with the fold being
trained and refuses, before nnU-Net creates a folder, a checkpoint whose stored fold (nnU-Net keeps the trainer's
``__init__`` arguments in ``checkpoint["init_args"]``, the fold among them) is another fold or ``all``. Fold ``all``
of the fusion model may start from any checkpoint (its "validation" cases are training cases anyway).
"""

from __future__ import annotations

import os
import string
from typing import Optional

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


FOLD_PLACEHOLDER = "{fold}"


def valid_checkpoint_template(template: str) -> bool:
    """True when ``template`` holds no ``{...}`` field other than ``{fold}`` (and no unmatched brace)."""
    try:
        return all(field in (None, "fold") and not spec and not conversion
                   for _, field, spec, conversion in string.Formatter().parse(template))
    except ValueError:
        return False


def stored_fold(checkpoint_path: str) -> Optional[str]:
    """The fold an nnU-Net checkpoint was trained on (``init_args["fold"]`` as text), None when it names none.

    Loaded memory-mapped: the tensors are not read.
    """
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # a file in torch's legacy (non-zip) format cannot be memory-mapped
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    init_args = checkpoint.get("init_args") if isinstance(checkpoint, dict) else None
    fold = init_args.get("fold") if isinstance(init_args, dict) else None
    return None if fold is None else str(fold)


def resolve_pretrained_checkpoint(template: str, fold, where: str) -> dict:
    """The checkpoint for ``fold``: ``{"path", "stored_fold"}`` (``stored_fold`` None when the checkpoint names none).

    ``{fold}`` in ``template`` becomes the fold (``.../fold_{fold}/checkpoint_final.pth``). Refused, naming the
    setting: a path that is not a file, and for a cross-validation fold a checkpoint trained on another fold or on
    fold ``all`` (it saw this fold's validation cases).
    """
    if not valid_checkpoint_template(template):
        raise MVExtError(f"trainer_settings of {where}: 'pretrained_checkpoint' {template} holds a placeholder other "
                         f"than {FOLD_PLACEHOLDER}. Allowed: a path, with {FOLD_PLACEHOLDER} where the fold goes.")
    path = template.replace(FOLD_PLACEHOLDER, str(fold))
    shown = path if path == template else f"{path} (from {template})"
    if not os.path.isfile(path):
        raise MVExtError(f"trainer_settings of {where}: 'pretrained_checkpoint' {shown} is not a file. Allowed: the "
                         f"path of an nnU-Net checkpoint (.pth) trained on the same plan, with {FOLD_PLACEHOLDER} "
                         f"where the fold goes.")
    trained_on = stored_fold(path)
    if str(fold) != "all" and trained_on is not None and trained_on != str(fold):
        raise MVExtError(
            f"trainer_settings of {where}: 'pretrained_checkpoint' {shown} was trained on fold {trained_on}, but this "
            f"is fold {fold}: " + ("fold 'all' trained on every case" if trained_on == "all" else
                                   f"fold {trained_on} trained on the validation cases of fold {fold}")
            + ", so its weights carry them into this fold's validation. Allowed: the checkpoint of the same fold, "
              f"e.g. '.../fold_{FOLD_PLACEHOLDER}/checkpoint_final.pth' ({FOLD_PLACEHOLDER} becomes the fold).")
    return {"path": os.path.abspath(path), "stored_fold": trained_on}


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
                if p == 0:  # phases 1.. of a partly shared encoder hold only their own stages
                    skipped.append(key)
            elif target[name].shape == value.shape:
                loaded[name] = value
            elif net.phase_norm and target[name].shape == (len(net.phase_channels), *value.shape):
                loaded[name] = value.unsqueeze(0).expand(target[name].shape).clone()   # one pair per phase
            else:
                part = _first_conv_slice(value, target[name].shape, net.phase_channels, p,
                                         net.shared_encoder and not net.phase_specific_stages)
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
