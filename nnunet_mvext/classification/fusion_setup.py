"""Everything a fusion trainer checks before nnU-Net creates a folder, and the model description it stores.

:func:`fusion_model_info` takes the plans, the configuration name, ``dataset.json`` and the resolved
``trainer_settings`` and returns the ``case_classification`` description that rebuilds the network (stored in the
model folder's ``plans.json`` for ``nnUNetv2_predict`` and in every checkpoint for ``predict-cls``), or raises an
:class:`~nnunet_mvext.errors.MVExtError` naming the key, label, channel or configuration and what is allowed.
"""

from __future__ import annotations

from typing import Mapping, Optional

from nnunet_mvext.architectures.multiphase_fusion_net import NETWORK_VERSION, validate_phase_channels
from nnunet_mvext.classification.case_labels import class_block
from nnunet_mvext.errors import MVExtError

CASE_KEY = "case_classification"
LESION_NAMES = ("lesion", "tumour", "tumor")
#: keys of the stored description that must agree between the folds of one model folder
FOLD_INVARIANT_KEYS = ("network_version", "num_classes", "class_names", "fusion", "phase_channels", "shared_encoder",
                       "phase_norm", "phase_specific_stages", "input_contrast",
                       "classification_encoder_width",
                       "dsn_lambda", "abaf_detach_beta", "lesion_label", "fallback_roi_label", "segmentation",
                       "views", "view_slices", "patch_pooling", "lesion_context", "lesion_mean_embedding")


def _plain_labels(labels: Mapping) -> dict[str, int]:
    return {name: int(v) for name, v in labels.items() if not isinstance(v, (list, tuple))}


def _check_label(key: str, value: int, labels: Mapping, where: str) -> int:
    plain = _plain_labels(labels)
    ignore = plain.get("ignore")
    foreground = {n: v for n, v in plain.items() if v != 0 and n != "ignore"}
    listing = ", ".join(f"{n}={v}" for n, v in sorted(foreground.items(), key=lambda kv: kv[1]))
    if value == ignore:
        raise MVExtError(f"{where}: '{key}' is {value}, nnU-Net's ignore label. Allowed: a foreground label "
                         f"({listing}).")
    if value not in foreground.values():
        raise MVExtError(f"{where}: '{key}' is {value}, not a foreground label of this dataset. Allowed: {listing}.")
    return value


def resolve_lesion_label(setting: Optional[int], labels: Mapping, where: str) -> int:
    """The label whose region is pooled: the setting, else the one label named like a lesion."""
    if setting is not None:
        return _check_label("lesion_label", setting, labels, where)
    plain = _plain_labels(labels)
    named = {n: v for n, v in plain.items() if v != 0 and n != "ignore" and any(w in n.lower() for w in LESION_NAMES)}
    listing = ", ".join(f"{n}={v}" for n, v in sorted(plain.items(), key=lambda kv: kv[1]) if v != 0)
    if len(named) == 1:
        return next(iter(named.values()))
    if not named:
        raise MVExtError(f"{where}: no label is named like a lesion ({', '.join(LESION_NAMES)}), so trainer_settings "
                         f"'lesion_label' must be set. Labels of this dataset: {listing}.")
    raise MVExtError(f"{where}: several labels are named like a lesion "
                     f"({', '.join(f'{n}={v}' for n, v in named.items())}); set trainer_settings 'lesion_label' to "
                     f"the one to classify.")


def default_shared_encoder(phase_channels: list[list[int]], segmentation: bool) -> bool:
    """What ``shared_encoder: null`` means: one encoder shared by the phases for classification-only models
    (``segmentation: false``) whose phases have equal channel counts (folding the phases into the batch needs equal
    sizes), else one encoder per phase.

    Why (``benchmarks/RESULTS.md``, 2 CPU cores): on the LLD-MMRI mock (``benchmarks/lld_accuracy.py``, 8 phases,
    ``segmentation: false``, 60 held-out patients) one shared encoder raised the challenge score from 0.407
    [0.314, 0.505] to 0.617 [0.509, 0.720] at a quarter of the training time. With a decoder (the 7-class, 8-phase
    box data of ``benchmarks/fusion_classification_results.py``, four seeds) it raised macro-F1 on every seed too
    (mean 0.501 -> 0.642 given the boxes), but lowered the validation lesion Dice by 0.018-0.040, beyond its interval
    on three of the four seeds, which the fusion trainers' rule for a default forbids; there it stays one encoder per
    phase. Two variants of the shared encoder (per-phase norms, ``phase_norm``; the first stage per phase,
    ``phase_specific_stages: 1``) were measured against that rule too: the first kept the Dice cost, the second kept
    the Dice but only a third of the class gain (inside the seed range), so neither is a default. Stored resolved
    (true or false) in the model description, so a model keeps what it was trained with.
    """
    return not segmentation and len({len(g) for g in phase_channels}) == 1


def default_classification_encoder_width(shared: bool, segmentation: bool, phase_channels: list[list[int]],
                                         n_stages: int) -> float:
    """What ``classification_encoder_width: null`` means: 1 (a classification encoder of the plan's widths) where
    one can be built, i.e. one encoder per phase, a decoder, phases of equal channel count and a plan of at least
    2 stages; else 0 (the embedding pools the segmentation encoders).

    Why (``benchmarks/RESULTS.md``, 2 CPU cores, 2026-12-06): on the 7-class, 8-phase box data of
    ``benchmarks/fusion_classification_results.py`` (seeds 0-2, 1400 iterations), the per-phase segmentation encoders
    read for the class reached macro-F1 0.479-0.566 (mean 0.530) given the boxes; the classification encoder reached
    0.649-0.708 (mean 0.671, gain 0.090-0.229 per seed against a seed range of 0.087; κ mean 0.656; the feature oracle
    0.701) with every class predicted, and the lesion Dice rose or stayed (0.891, 0.810, 0.849 against 0.832, 0.807,
    0.813), because the segmentation encoders no longer receive the classification gradient. The shared encoder
    (``shared_encoder: true``) gained as much in class but lost Dice beyond its interval. The classification encoder
    starts at the plan's second resolution, so that its step time and memory stay small (measured by
    ``benchmarks/fusion_memory.py --encoders``). Stored only when > 0, so models trained before the setting existed
    rebuild unchanged.
    """
    equal = len({len(g) for g in phase_channels}) == 1
    return 1.0 if (not shared and segmentation and equal and n_stages >= 2) else 0.0


def fusion_model_info(plans: dict, configuration: str, dataset_json: dict, settings) -> dict:
    """Validate the fusion setup and return the stored description (see the module docstring)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    where = f"configuration '{configuration}' of plans '{plans.get('plans_name', '?')}'"
    config = PlansManager(plans).get_configuration(configuration)
    if len(config.patch_size) != 3:
        raise MVExtError(f"{where} is {len(config.patch_size)}D; fusion trainers classify 3D patches around the "
                         f"lesion. Use a 3D configuration (e.g. 3d_fullres).")
    if config.previous_stage_name is not None:
        raise MVExtError(f"{where} is a cascade stage (previous stage '{config.previous_stage_name}'); fusion "
                         f"trainers would drop the previous stage's segmentation channels. Use 3d_fullres or "
                         f"3d_lowres.")
    labels = dataset_json["labels"]
    regions = [n for n, v in labels.items() if isinstance(v, (list, tuple))]
    if regions:
        raise MVExtError(f"dataset.json of {plans.get('dataset_name', '?')} uses region-based labels ({regions}); "
                         f"fusion trainers need plain labels because the lesion is found as one label of the "
                         f"segmentation.")
    block = class_block(dataset_json, f"dataset.json of {plans.get('dataset_name', '?')}")
    n_channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
    phases = validate_phase_channels([[c] for c in range(n_channels)] if settings.phase_channels is None
                                     else settings.phase_channels, n_channels, bool(settings.shared_encoder),
                                     f"trainer_settings of {where}")
    # null resolves to shared only for phases of equal size, so the check above (skipped for null) cannot be missed
    shared = (default_shared_encoder(phases, settings.segmentation) if settings.shared_encoder is None
              else settings.shared_encoder)
    if settings.phase_norm and not shared:
        raise MVExtError(f"trainer_settings of {where}: 'phase_norm' is true but the encoder is not shared "
                         f"('shared_encoder' {settings.shared_encoder}, resolved to false). Allowed: 'phase_norm' "
                         f"true with 'shared_encoder' true (one encoder per phase has its own norms), else false.")
    if settings.phase_norm and config.network_arch_init_kwargs.get("norm_op", "") is None:
        raise MVExtError(f"trainer_settings of {where}: 'phase_norm' is true, but the plan's encoder has no "
                         f"normalisation ('norm_op' null). Allowed: false.")
    if settings.input_contrast and len({len(g) for g in phases}) != 1:
        raise MVExtError(f"trainer_settings of {where}: 'input_contrast' is true, but the phases have different "
                         f"channel counts ('phase_channels' {phases}). Allowed: false, or phases of equal size.")
    plan_stages = int(config.network_arch_init_kwargs.get("n_stages", 0))
    equal_phases = len({len(g) for g in phases}) == 1
    if settings.classification_encoder_width is None:
        width = default_classification_encoder_width(shared, settings.segmentation, phases, plan_stages)
    else:
        width = float(settings.classification_encoder_width)
    if width and (shared or not settings.segmentation or not equal_phases or plan_stages < 2):
        raise MVExtError(f"trainer_settings of {where}: 'classification_encoder_width' is {width}, but "
                         + ("the encoder is shared ('shared_encoder' " + f"{settings.shared_encoder}, resolved to "
                            "true), which the classification reads already" if shared else
                            "'segmentation' is false: there are no segmentation encoders to keep apart"
                            if not settings.segmentation else
                            f"the phases have different channel counts ('phase_channels' {phases})"
                            if not equal_phases else
                            f"the plan's encoder has {plan_stages} stage(s) (the classification encoder starts at "
                            f"the second resolution)")
                         + ". Allowed: null, 0, or a number in (0, 4] with one encoder per phase ('shared_encoder' "
                           "false), 'segmentation' true, phases of equal size and a plan of at least 2 stages.")
    k = settings.phase_specific_stages
    if settings.phase_norm and k:
        raise MVExtError(f"trainer_settings of {where}: 'phase_norm' is true and 'phase_specific_stages' is {k}; "
                         f"they are two ways of giving the phases their own weights in a shared encoder and are not "
                         f"combined. Allowed: one of them.")
    n_stages = int(config.network_arch_init_kwargs.get("n_stages", 0)) if k else 0
    if k and not (shared and k < n_stages):
        raise MVExtError(f"trainer_settings of {where}: 'phase_specific_stages' is {k}, but "
                         + (f"the encoder is not shared ('shared_encoder' {settings.shared_encoder}, resolved to "
                            f"false)" if not shared else f"the plan's encoder has {n_stages} stages")
                         + f". Allowed: 0, or 1..{n_stages - 1} with 'shared_encoder' true (at least one stage "
                           f"shared).")
    lesion = resolve_lesion_label(settings.lesion_label, labels, f"trainer_settings of {where}")
    fallback = None
    if settings.fallback_roi_label is not None:
        fallback = _check_label("fallback_roi_label", settings.fallback_roi_label, labels,
                                f"trainer_settings of {where}")
        if fallback == lesion:
            raise MVExtError(f"trainer_settings of {where}: 'fallback_roi_label' equals 'lesion_label' ({lesion}); "
                             f"it must name another label (e.g. the organ).")
    names = [block["class_names"][str(i)] for i in range(len(block["class_names"]))]
    return {"network_version": NETWORK_VERSION, "num_classes": len(names), "class_names": names,
            "fusion": settings.fusion, "phase_channels": phases, "shared_encoder": shared,
            "dsn_lambda": settings.dsn_lambda, "abaf_detach_beta": settings.abaf_detach_beta, "lesion_label": lesion,
            "fallback_roi_label": fallback, "segmentation": settings.segmentation,
            "lesion_context": settings.lesion_context, "missing_phases": settings.missing_phases,
            # these items are stored only when set, so that folds trained before they existed still agree
            **({"phase_norm": True} if settings.phase_norm else {}),
            **({"phase_specific_stages": int(k)} if k else {}),
            **({"input_contrast": True} if settings.input_contrast else {}),
            **({"classification_encoder_width": width} if width else {}),
            **({"patch_pooling": True} if "patch_pooling" in settings.protocol_ablation else {}),
            **({"lesion_mean_embedding": True} if "lesion_mean_embedding" in settings.protocol_ablation else {})}


def check_stored_info(info: Optional[dict], source: str) -> dict:
    """A stored description that this release can rebuild; older models are refused with what to do."""
    if info is None:
        raise MVExtError(f"{source} holds no '{CASE_KEY}' description: it was not written by a fusion trainer. Use "
                         f"nnUNetv2_predict for segmentation models.")
    version = info.get("network_version", 1)
    if version != NETWORK_VERSION:
        raise MVExtError(f"{source} was trained with fusion network version {version} (an earlier nnunet-mvext with "
                         f"another lesion embedding); this release needs version {NETWORK_VERSION}. Retrain the model "
                         f"with this release (nnUNetv2_train ... -tr <the same trainer>).")
    return info


def differing_keys(a: dict, b: dict) -> list[str]:
    """Keys of :data:`FOLD_INVARIANT_KEYS` whose values differ between two stored descriptions."""
    return [k for k in FOLD_INVARIANT_KEYS if a.get(k) != b.get(k)]


def changes_text(stored: dict, now: dict) -> str:
    """``key: stored -> now`` for each differing key; a key absent from a description (stored only when set, e.g.
    ``classification_encoder_width``) reads ``absent (off: 0 or false)``, the value to set to get it back."""
    def shown(d: dict, k: str) -> str:
        return repr(d[k]) if k in d else "absent (off: 0 or false)"

    return ", ".join(f"{k}: {shown(stored, k)} -> {shown(now, k)}" for k in differing_keys(stored, now))
