"""The ``trainer_settings`` object of a plans configuration: one place that defines, documents and validates keys.

A configuration in ``nnUNetPlans.json`` may carry::

    "3d_fullres_adan": {"inherits_from": "3d_fullres",
                        "trainer_settings": {"optimizer": "adan", "initial_lr": 0.001, "num_epochs": 500}}

Every trainer of this package resolves that object with :func:`resolve_trainer_settings` before any folder is
created or any data is read, so a misspelled key, a wrong type or an out-of-range value stops the run with a
:class:`~nnunet_mvext.errors.MVExtError` that names the key and lists what is allowed. Later features add their keys
to :data:`SETTINGS` here; nothing else defines keys.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

from nnunet_mvext.errors import MVExtError

# Per-optimizer defaults for the keys whose best value depends on the optimizer (reasons in
# docs/how_to/mbtfe_adan_dice.md).
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    # nnU-Net's own SGD settings: Nesterov momentum 0.99, lr 1e-2, coupled L2 weight decay 3e-5.
    "sgd": {"initial_lr": 1e-2, "weight_decay": 3e-5, "warmup_fraction": 0.0},
    # Adan paper (Xie et al., 2022) defaults: lr 1e-3, decoupled weight decay 0.02, a short linear warmup
    # (5 % of the epochs) because the adaptive denominators are noisy during the first updates.
    "adan": {"initial_lr": 1e-3, "weight_decay": 2e-2, "warmup_fraction": 0.05},
}


@dataclass(frozen=True)
class SettingSpec:
    """One key: its default, the JSON types it accepts, a range check and the text shown in errors and docs."""

    name: str
    default: Any
    types: tuple
    allowed: str
    doc: str
    check: Optional[Callable[[Any], bool]] = None
    choices: Optional[tuple] = None
    #: Which trainers use the key: "all", "fusion" (trainers that declare that scope) or an optimizer name
    #: ("adan": only when the resolved ``optimizer`` is adan). Elsewhere the key is accepted but logged as ignored.
    applies_to: str = "all"
    #: What the key is for (one of :data:`SETTING_KINDS`): "setting" (users are expected to change it), "option" (for
    #: a particular situation) or "ablation" (kept for the benchmarks). The reference page groups the keys by it.
    kind: str = ""


#: The kinds of key (:attr:`SettingSpec.kind`), in the order docs/reference/trainer_settings.md lists them.
SETTING_KINDS = ("setting", "option", "ablation")


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


def _width_fraction(v) -> bool:
    return 0 <= v <= 4


def _phase_groups(v) -> bool:
    """A non-empty list of non-empty lists of channel indices (an empty list is refused like an empty group: it
    would silently mean 'one phase per channel', which is null's meaning)."""
    return bool(v) and all(isinstance(g, list) and g and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                             for c in g) for g in v)


def _views(v) -> bool:
    names = ("axial", "coronal", "sagittal")
    return bool(v) and all(isinstance(x, str) and x in names for x in v) and len(set(v)) == len(v)


def _odd_positive(v) -> bool:
    return v >= 1 and v % 2 == 1


PROTOCOL_ABLATIONS = ("lesion_only_sampling", "per_phase_augmentation", "patch_pooling", "lesion_mean_embedding")


def _ablations(v) -> bool:
    return all(isinstance(x, str) and x in PROTOCOL_ABLATIONS for x in v) and len(set(v)) == len(v)


def _probability_below_one(v) -> bool:
    return 0 <= v < 1


def _checkpoint_template(v) -> bool:
    from nnunet_mvext.classification.pretrained import valid_checkpoint_template

    return valid_checkpoint_template(v)


def _betas(v) -> bool:
    return len(v) == 3 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in v)


SETTINGS: dict[str, SettingSpec] = {s.name: s for s in [
    SettingSpec("num_epochs", 1000, (int,), "an integer >= 1", "Number of epochs.", _positive, kind="setting"),
    SettingSpec("num_iterations_per_epoch", 250, (int,), "an integer >= 1", "Training iterations per epoch.",
                _positive, kind="option"),
    SettingSpec("num_val_iterations_per_epoch", 50, (int,), "an integer >= 1",
                "Validation iterations per epoch (pseudo Dice).", _positive, kind="option"),
    SettingSpec("initial_lr", None, (float, int), "a number > 0, or null for the optimizer's default",
                "Peak learning rate. null: 1e-2 for sgd, 1e-3 for adan.", _positive, kind="setting"),
    SettingSpec("weight_decay", None, (float, int), "a number >= 0, or null for the optimizer's default",
                "Weight decay. null: 3e-5 (coupled L2) for sgd, 0.02 (decoupled, not on norm weights and biases) "
                "for adan.", _non_negative, kind="option"),
    SettingSpec("optimizer", "sgd", (str,), "one of 'sgd', 'adan'",
                "sgd: nnU-Net's SGD (Nesterov, momentum 0.99). adan: timm.optim.Adan, foreach path.",
                choices=("sgd", "adan"), kind="setting"),
    SettingSpec("adan_betas", [0.98, 0.92, 0.99], (list,), "a list of three numbers in [0, 1)",
                "Adan's (beta1, beta2, beta3) in timm's convention (the paper's 0.02, 0.08, 0.01).", _betas,
                applies_to="adan", kind="option"),
    SettingSpec("lr_schedule", "poly", (str,), "one of 'poly', 'cosine'",
                "After warmup: nnU-Net's polynomial decay (exponent 0.9) or cosine decay to 0.",
                choices=("poly", "cosine"), kind="option"),
    SettingSpec("warmup_epochs", None, (int,), "an integer >= 0 and < num_epochs, or null for the default",
                "Linear warmup epochs before the schedule. null: 0 for sgd, 5 % of num_epochs for adan.",
                _non_negative, kind="option"),
    SettingSpec("loss", "dice_ce", (str,), "one of 'dice_ce', 'dice'",
                "dice_ce: nnU-Net's Dice + cross-entropy (BCE for regions). dice: soft Dice only. Both with deep "
                "supervision, regions and ignore labels.", choices=("dice_ce", "dice"), kind="setting"),
    SettingSpec("oversample_foreground_percent", 0.33, (float, int), "a number in [0, 1]",
                "Fraction of each batch sampled around foreground (nnU-Net's default 0.33).",
                lambda v: 0 <= v <= 1, kind="option"),
    SettingSpec("save_every", 50, (int,), "an integer >= 1", "Write checkpoint_latest.pth every N epochs.",
                _positive, kind="option"),
    SettingSpec("seed", None, (int,), "an integer >= 0, or null (unseeded, nnU-Net's behaviour)",
                "Repeatable training on the CPU, also across --c: seeds Python, numpy and torch before the network "
                "is built and again at every epoch start, where the augmentation workers restart with seeds drawn "
                "from (seed, epoch, worker) and return batches in a fixed order.", _non_negative, kind="setting"),
    # multi-phase classification (nnUNetTrainerFusion*)
    SettingSpec("fusion", "abaf", (str,), "one of 'concat', 'dsn', 'abaf', 'decision'",
                "Fusion trainers: how the per-phase lesion embeddings are fused for the case class (decision: one "
                "classifier per phase, log-probabilities combined by learned weights).",
                choices=("concat", "dsn", "abaf", "decision"), applies_to="fusion", kind="setting"),
    SettingSpec("phase_channels", None, (list,), "a non-empty list of non-empty channel-index lists, or null (one "
                "phase per channel)",
                "Fusion trainers: which input channels form each phase's encoder input.", _phase_groups,
                applies_to="fusion", kind="setting"),
    SettingSpec("shared_encoder", None, (bool,), "true, false or null (true with 'segmentation: false' where the "
                "phases have equal channel counts, else false; the multi-view trainers default to false)",
                "Fusion trainers: one encoder for all phases (folded into the batch) instead of one per phase.",
                applies_to="fusion", kind="option"),
    SettingSpec("phase_norm", False, (bool,), "true or false (true needs the encoder shared: 'shared_encoder')",
                "Fusion trainers: in the shared encoder, one affine pair (scale, shift) per phase in every "
                "normalisation layer; the convolutions stay shared.", applies_to="fusion", kind="ablation"),
    SettingSpec("input_contrast", False, (bool,), "true or false (true needs phases of equal channel count)",
                "Fusion trainers: the lesion embedding also pools the input intensities of each phase (lesion mean "
                "and lesion minus its ring), before any convolution.", applies_to="fusion", kind="ablation"),
    SettingSpec("phase_specific_stages", 0, (int,), "an integer >= 0, below the plan's number of stages (> 0 needs "
                "'shared_encoder' true)",
                "Fusion trainers: with a shared encoder, its first k stages stay one copy per phase and only the "
                "deeper stages are shared.", _non_negative, applies_to="fusion", kind="option"),
    SettingSpec("classification_encoder_width", None, (float, int), "a number in [0, 4] or null (> 0 needs one "
                "encoder per phase, a decoder, phases of equal channel count and a plan of at least 2 stages; null "
                "is 1 where these hold, else 0)",
                "Fusion trainers: 0 pools the segmentation encoders for the case class; w > 0 pools a separate "
                "encoder shared by the phases (the plan's stages from the second resolution on, w times their "
                "features), trained by the classification loss alone.", _width_fraction, applies_to="fusion",
                kind="option"),
    SettingSpec("dsn_lambda", 1.0, (float, int), "a number >= 0",
                "Fusion trainers, dsn: weight of the mean per-phase auxiliary cross-entropy (1: DSN equals ABAF "
                "with uniform beta; the seed's sum over phases is dsn_lambda = P).", _non_negative,
                applies_to="fusion", kind="ablation"),
    SettingSpec("abaf_detach_beta", False, (bool,), "true or false",
                "Fusion trainers, abaf: phase weights beta enter the auxiliary loss as constants (false, the paper's "
                "and the seed's choice: beta is also trained through the auxiliary loss).", applies_to="fusion",
                kind="ablation"),
    SettingSpec("classification_loss_weight", 1.0, (float, int), "a number > 0",
                "Fusion trainers: weight of the classification loss added to the segmentation loss.", _positive,
                applies_to="fusion", kind="option"),
    SettingSpec("lesion_label", None, (int,), "a label value >= 1 (not 'ignore'), or null",
                "Fusion trainers: the label whose region is pooled for the case class. null: the label named "
                "lesion, tumour or tumor; without one it must be set.", _positive, applies_to="fusion", kind="setting"),
    SettingSpec("fallback_roi_label", None, (int,), "a label value >= 1 (not 'ignore'), or null",
                "Fusion trainers: label that localises cases without any lesion voxels (e.g. the organ, for "
                "normal-vs-abnormal tasks), in training and inference alike. null: such cases are left out of the "
                "classification loss and classified from the global mean at inference (flagged).", _positive,
                applies_to="fusion", kind="option"),
    SettingSpec("segmentation", True, (bool,), "true or false",
                "Fusion trainers: train the segmentation decoder jointly (nnUNetv2_predict works; inference pools "
                "over the predicted lesion). false: classification only; predict-cls then needs --roi masks or "
                "boxes.", applies_to="fusion", kind="option"),
    SettingSpec("class_weighting", "balanced", (str,), "one of 'none', 'balanced'",
                "Fusion trainers: class imbalance. balanced: cross-entropy weights n / (K n_k) from the training "
                "cases of the fold that enter the classification loss (with lesion voxels, or fallback_roi_label "
                "voxels when set).", choices=("none", "balanced"), applies_to="fusion", kind="option"),
    SettingSpec("pretrained_checkpoint", None, (str,),
                "a path to an nnU-Net checkpoint (.pth), '{fold}' where the fold goes, or null",
                "Fusion trainers: initialise every phase encoder (first conv from that phase's input channels) and "
                "the decoder from a segmentation model trained on the same plan; the log lists what was loaded. "
                "'{fold}' becomes the fold trained; a checkpoint of another fold or of fold 'all' is refused (it "
                "trained on this fold's validation cases).", _checkpoint_template, applies_to="fusion", kind="option"),
    SettingSpec("lesion_context", "ring", (str,), "one of 'ring', 'patch'",
                "Fusion trainers: what the lesion is compared with at every encoder stage (embedding [lesion mean; "
                "lesion mean - context mean]): a one-voxel ring around it at each stage's resolution, or the whole "
                "patch.", choices=("ring", "patch"), applies_to="fusion", kind="ablation"),
    SettingSpec("case_sampling", "uniform", (str,), "one of 'uniform', 'sqrt_balanced', 'balanced'",
                "Fusion trainers: how often each training case is drawn. uniform: nnU-Net's sampling; balanced: each "
                "case class equally often; sqrt_balanced: class frequency proportional to the square root of its "
                "case count.", choices=("uniform", "sqrt_balanced", "balanced"), applies_to="fusion", kind="option"),
    SettingSpec("label_smoothing", 0.0, (float, int), "a number in [0, 1)",
                "Fusion trainers: label smoothing of the classification cross-entropy.", _probability_below_one,
                applies_to="fusion", kind="option"),
    SettingSpec("phase_dropout", 0.0, (float, int), "a number in [0, 1)",
                "Fusion trainers: in training, each phase's embedding of each sample is dropped (zero, left out of "
                "the fusion weights) with this probability; at least one phase is kept.", _probability_below_one,
                applies_to="fusion", kind="option"),
    SettingSpec("phase_misalignment_voxels", 0, (int,), "an integer >= 0",
                "Fusion trainers: augmentation; every phase but one (the import's reference phase, C+A for "
                "import-lld datasets, else the first) is shifted by a random integer offset in "
                "[-n, n] voxels per axis (probability 0.5 per phase), as patients move between phases "
                "(batchgeneratorsv2's ChannelMisalignmentTransform). 0: off.", _non_negative, applies_to="fusion",
                kind="option"),
    SettingSpec("missing_phases", "refuse", (str,), "one of 'refuse', 'zero'",
                "Fusion trainers: cases that miss a phase (missing_phases.json, written by import-lld). refuse: stop "
                "before training and in predict-cls, naming them; zero: leave a case's missing phases out of the "
                "fusion (ABAF beta 0), in training and inference.", choices=("refuse", "zero"), applies_to="fusion",
                kind="option"),
    SettingSpec("protocol_ablation", [], (list,),
                "a list of 'lesion_only_sampling', 'per_phase_augmentation', 'patch_pooling', "
                "'lesion_mean_embedding' (each at most once)",
                "Fusion trainers, for ablation studies only: turn back items of earlier releases' protocol. "
                "lesion_only_sampling: every training and validation sample centred on the lesion, for the "
                "segmentation loss too (oversample_foreground_percent 1.0); per_phase_augmentation: nnU-Net's "
                "intensity transforms drawn per phase; patch_pooling: the embedding pools the whole patch, not the "
                "lesion (3D fusion trainers only); lesion_mean_embedding: the embedding of release 2 (lesion mean of "
                "the last two encoder stages, no comparison with the surroundings).", _ablations,
                applies_to="fusion", kind="ablation"),
    SettingSpec("validation_mirroring", True, (bool,), "true or false",
                "Fusion trainers: test-time mirroring in the final validation (nnU-Net's behaviour). false: as "
                "predict-cls --disable_tta, for CPU runs.", applies_to="fusion", kind="option"),
    # multi-view (2.5D) classification (nnUNetTrainerMultiView*)
    SettingSpec("views", None, (list,), "a list of 'axial', 'coronal', 'sagittal' (each at most once), or null",
                "Fusion trainers, multi-view (nnUNetTrainerMultiView*): 2D slabs through the lesion centre along "
                "these axes of the preprocessed array (axial = axis 0, coronal = 1, sagittal = 2), one 2D encoder "
                "branch per (phase, view). null: no views; the multi-view trainers default to all three, the 3D "
                "fusion trainers do not read it.", _views, applies_to="fusion", kind="setting"),
    SettingSpec("view_slices", 1, (int,), "an odd integer >= 1",
                "Fusion trainers, multi-view: adjacent planes per slab, stacked as channels (1: the plane through "
                "the lesion centre, the seed's input; 3 adds one neighbour on each side).", _odd_positive,
                applies_to="fusion", kind="option"),
]}


#: Scopes a trainer class may declare in ``settings_scopes``. "all" is in use for every trainer, an optimizer name
#: (a key of OPTIMIZER_DEFAULTS) whenever that optimizer is the resolved ``optimizer``.
TRAINER_SCOPES = ("fusion",)


def _scope_text(scope: str) -> str:
    if scope == "all":
        return "all trainers"
    if scope in OPTIMIZER_DEFAULTS:
        return f"trainers with optimizer '{scope}'"
    return f"{scope} trainers"


class TrainerSettings(Mapping):
    """The resolved settings of one run: every key of :data:`SETTINGS`, with per-optimizer defaults filled in.

    ``explicit`` holds the keys the plans file set (printed in the training log as such); ``ignored`` the keys this
    trainer does not use (their :attr:`SettingSpec.applies_to` scope is not in use), which a configuration shared by
    several trainers may still set.
    """

    def __init__(self, values: dict, explicit: frozenset, ignored: frozenset = frozenset()):
        self._values = dict(values)
        self.explicit = explicit
        self.ignored = ignored

    def __getitem__(self, key: str):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def describe(self) -> str:
        """The keys in force, one line each marking where the value came from, then the plans keys this trainer
        ignores (keys it ignores that the plans do not set are not listed)."""
        width = max(len(k) for k in self._values)
        lines = [f"  {k:<{width}} = {v!r} ({'plans' if k in self.explicit else 'default'})"
                 for k, v in self._values.items() if k not in self.ignored]
        unused = [k for k in self._values if k in self.ignored and k in self.explicit]
        if unused:
            lines.append("set in the plans but ignored by this trainer:")
            lines += [f"  {k:<{width}} = {self._values[k]!r} (used by {_scope_text(SETTINGS[k].applies_to)})"
                      for k in unused]
        return "\n".join(lines)

    def record(self) -> dict:
        """A plain-data copy for a checkpoint: the resolved values and which keys the plans set."""
        return {"values": dict(self._values), "explicit": sorted(self.explicit)}

    def differences(self, recorded: Mapping) -> dict[str, str]:
        """Key -> ``"  key: old -> new (source)"`` for every resolved value that differs from ``recorded`` (a
        :meth:`record`).

        A key the record lacks (added to :data:`SETTINGS` since) is listed only if the plans set it; a recorded key
        that is no longer a setting is listed as such.
        """
        old = recorded.get("values", {})
        changes = {}
        for key, value in self._values.items():
            source = "plans" if key in self.explicit else "default"
            if key not in old:
                if key in self.explicit:
                    changes[key] = f"  {key}: (not recorded) -> {value!r} ({source})"
            elif old[key] != value:
                changes[key] = f"  {key}: {old[key]!r} -> {value!r} ({source})"
        changes.update({key: f"  {key}: {old[key]!r} -> (no longer a setting)" for key in old
                        if key not in self._values})
        return changes


def _type_ok(spec: SettingSpec, value: Any) -> bool:
    if isinstance(value, bool):
        return bool in spec.types
    return isinstance(value, spec.types)


def _error(where: str, key: str, problem: str, spec: Optional[SettingSpec] = None) -> MVExtError:
    allowed = f" Allowed: {spec.allowed}." if spec is not None else ""
    return MVExtError(f"trainer_settings of {where}: key '{key}' {problem}.{allowed}")


def validate_raw_settings(raw: Any, where: str) -> dict:
    """Check names, types and ranges of a ``trainer_settings`` object as written in a plans file or template."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise MVExtError(f"trainer_settings of {where} must be a JSON object, got {type(raw).__name__}. "
                         f"Allowed keys: {', '.join(SETTINGS)}.")
    for key, value in raw.items():
        spec = SETTINGS.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, SETTINGS.keys(), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise MVExtError(f"trainer_settings of {where}: unknown key '{key}'.{hint} "
                             f"Allowed keys: {', '.join(SETTINGS)}.")
        if value is None and spec.default is None:
            continue
        if not _type_ok(spec, value):
            raise _error(where, key, f"has the wrong type ({type(value).__name__}: {value!r})", spec)
        if spec.choices is not None and value not in spec.choices:
            raise _error(where, key, f"has the value {value!r}", spec)
        if spec.check is not None and not spec.check(value):
            raise _error(where, key, f"is out of range ({value!r})", spec)
    return dict(raw)


def resolve_trainer_settings(raw: Any, where: str, trainer_defaults: Optional[Mapping] = None,
                             scopes: Iterable[str] = ()) -> TrainerSettings:
    """Validate ``raw`` and fill in defaults: the key's own, then the trainer's, then the optimizer's.

    ``trainer_defaults`` is how a trainer variant differs (e.g. ``{"optimizer": "adan"}``); values from the plans
    file always win (a trainer refuses plans values that contradict its defining keys before calling this).
    ``scopes`` are the :data:`TRAINER_SCOPES` the trainer uses; keys of other scopes end up in
    :attr:`TrainerSettings.ignored`. Cross-key rules (``warmup_epochs < num_epochs``) are checked on the final values.
    """
    scopes = set(scopes)
    if not scopes <= set(TRAINER_SCOPES):
        raise ValueError(f"unknown settings scopes {sorted(scopes - set(TRAINER_SCOPES))}; known: {TRAINER_SCOPES}")
    explicit = validate_raw_settings(raw, where)
    values = {k: spec.default for k, spec in SETTINGS.items()}
    values.update(trainer_defaults or {})
    values.update({k: v for k, v in explicit.items() if v is not None})

    optimizer_defaults = OPTIMIZER_DEFAULTS[values["optimizer"]]
    for key in ("initial_lr", "weight_decay"):
        if values[key] is None:
            values[key] = optimizer_defaults[key]
    if values["warmup_epochs"] is None:
        values["warmup_epochs"] = int(round(optimizer_defaults["warmup_fraction"] * values["num_epochs"]))
    if values["warmup_epochs"] >= values["num_epochs"]:
        raise _error(where, "warmup_epochs", f"is {values['warmup_epochs']} but num_epochs is "
                                             f"{values['num_epochs']}", SETTINGS["warmup_epochs"])
    in_use = {"all", values["optimizer"], *scopes}
    ignored = frozenset(k for k, spec in SETTINGS.items() if spec.applies_to not in in_use)
    return TrainerSettings(values, frozenset(k for k, v in explicit.items() if v is not None), ignored)


def settings_table_markdown(kind: Optional[str] = None) -> str:
    """The table of keys, defaults, scopes and meanings; only the keys of one ``kind`` when given.

    docs/reference/trainer_settings.md holds one table per kind (``python -m nnunet_mvext.reference_pages``).
    """
    rows = ["| key | default | allowed | used by | meaning |", "| --- | --- | --- | --- | --- |"]
    for spec in SETTINGS.values():
        if kind is not None and spec.kind != kind:
            continue
        default = "null" if spec.default is None else repr(spec.default).replace("'", '"')
        rows.append(f"| `{spec.name}` | `{default}` | {spec.allowed} | {_scope_text(spec.applies_to)} | {spec.doc} |")
    return "\n".join(rows)
