"""The MBTFE/EAB knobs of ``MBTFEUNet``: name, default, what is allowed and what it does, in one table.

A plans file sets them in the configuration's ``arch_kwargs``. :func:`resolve_knobs` checks every value before
anything is built (the message names the key and what is allowed) and returns explicit values (``mbtfe_stages`` as a
list of stage indices, ``eab_stages`` as an integer), so a model trained with them does not depend on the defaults of
the installed version. ``MBTFEUNet``, its blocks, the trainers and the planner all read this table; the knob table of
docs/how_to/mbtfe_adan_dice.md is :func:`knob_table_markdown`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from nnunet_mvext.errors import MVExtError

KNOB_PREFIXES = ("mbtfe_", "eab_")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


@dataclass(frozen=True)
class Knob:
    """One ``arch_kwargs`` key of ``MBTFEUNet``; ``check(value, n_stages)`` is True when the value is allowed."""

    name: str
    default: Any
    allowed: str
    doc: str
    check: Callable[[Any, Optional[int]], bool]


def _stages_ok(value: Any, n_stages: Optional[int]) -> bool:
    if value is None or value == "all":
        return True
    return isinstance(value, (list, tuple)) and all(
        _is_int(i) and i >= 0 and (n_stages is None or i < n_stages) for i in value)


def _eab_stages_ok(value: Any, n_stages: Optional[int]) -> bool:
    if value is None:
        return True
    return _is_int(value) and (value == 0 or (value >= 2 and (n_stages is None or value <= n_stages)))


BOOL = "true or false (a JSON boolean, not a string)"

KNOBS: tuple[Knob, ...] = (
    Knob("mbtfe_stages", None, 'null (stage 2 to n-2; stage 1 for 3 stages, 0 for 2), "all", or a list of stage '
                               'indices from 0 to n_stages - 1',
         "encoder stages followed by MBTFE; null: stage 2 to n-2 (the bottleneck is 4-8 voxels wide)", _stages_ok),
    Knob("mbtfe_branch_design", "cascade", '"cascade" or "parallel"',
         '"cascade" (3 shared convs) or "parallel" (the seed\'s 6)',
         lambda v, n: v in ("cascade", "parallel")),
    Knob("mbtfe_weighting", "branch", '"branch" or "channel"',
         'per-sample weight per branch (B, 4), or "channel" (B, 4, C) as selective-kernel attention',
         lambda v, n: v in ("branch", "channel")),
    Knob("mbtfe_reduction", 4, "an integer >= 1", "hidden width C / reduction (at least 8) of the weighting MLP",
         lambda v, n: _is_int(v) and v >= 1),
    Knob("mbtfe_residual", True, BOOL,
         "`x + gamma * y` with gamma zero-initialised (identity at init) instead of the seed's `y`",
         lambda v, n: _is_bool(v)),
    Knob("eab_stages", None, "null (min(3, n_stages)), 0 (off) or an integer from 2 to n_stages",
         "EAB joins the first N stages; null: min(3, n); 0 switches it off", _eab_stages_ok),
    Knob("eab_coarse", True, BOOL, "stage 0's attention and gate at stage 1's resolution",
         lambda v, n: _is_bool(v)),
    Knob("eab_fold_up_projection", True, BOOL,
         "the transposed conv feeds the gate directly (the seed adds a 1x1 conv)", lambda v, n: _is_bool(v)),
    Knob("eab_attention_kernel", 7, "an odd integer >= 1 (the attention must keep the spatial size)",
         "spatial-attention kernel (1 along axes the plan's stage-0 kernel does not convolve)",
         lambda v, n: _is_int(v) and v >= 1 and v % 2 == 1),
    Knob("eab_residual", True, BOOL,
         "skip `s + gamma * (s * g - s)` with gamma zero-initialised (identity at init) instead of the seed's `s * g`",
         lambda v, n: _is_bool(v)),
    Knob("channels_last", False, BOOL, "channels-last memory format", lambda v, n: _is_bool(v)),
    Knob("activation_checkpointing", False, BOOL,
         "recompute MBTFE/EAB activations in the backward pass to save memory", lambda v, n: _is_bool(v)),
)
KNOB_BY_NAME: dict[str, Knob] = {k.name: k for k in KNOBS}
DEFAULTS: dict[str, Any] = {k.name: k.default for k in KNOBS}

#: The seed's layout, for ablations and the benchmark's reference.
SEED_KNOBS: dict[str, Any] = {"mbtfe_stages": "all", "mbtfe_branch_design": "parallel", "mbtfe_residual": False,
                              "eab_stages": 3, "eab_coarse": False, "eab_fold_up_projection": False,
                              "eab_residual": False}


def check_knob(name: str, value: Any, n_stages: Optional[int] = None, where: str = "") -> None:
    """Raise :class:`MVExtError` naming ``name`` and what is allowed unless ``value`` is allowed."""
    knob = KNOB_BY_NAME[name]
    if not knob.check(value, n_stages):
        allowed = knob.allowed + (f" (n_stages = {n_stages})" if n_stages is not None and "n_stages" in knob.allowed
                                  else "")
        raise MVExtError(f"{where + ': ' if where else ''}arch_kwargs '{name}' is {value!r}; allowed: {allowed}.")


def default_mbtfe_stages(n_stages: int) -> list[int]:
    """Stage 2 to n-2 (stage 1 for a 3-stage plan, stage 0 for a 2-stage plan): see ``mbtfe_unet``'s docstring."""
    return list(range(min(2, n_stages - 2), n_stages - 1)) if n_stages > 2 else [0]


def resolve_knobs(values: Mapping[str, Any], n_stages: int, where: str = "") -> dict[str, Any]:
    """Every knob with an explicit value: ``values`` (a plans configuration's ``arch_kwargs`` or the constructor's
    arguments) over :data:`DEFAULTS`. Keys starting with ``mbtfe_``/``eab_`` that are not knobs are refused; other keys
    (the plan's own ``arch_kwargs``) are ignored."""
    unknown = sorted(k for k in values if k.startswith(KNOB_PREFIXES) and k not in KNOB_BY_NAME)
    if unknown:
        raise MVExtError(f"{where + ': ' if where else ''}arch_kwargs {', '.join(repr(k) for k in unknown)} "
                         f"{'is not a knob' if len(unknown) == 1 else 'are not knobs'} of MBTFEUNet; allowed: "
                         f"{', '.join(KNOB_BY_NAME)}.")
    resolved = {name: values.get(name, knob.default) for name, knob in KNOB_BY_NAME.items()}
    for name, value in resolved.items():
        check_knob(name, value, n_stages, where)
    stages = resolved["mbtfe_stages"]
    if stages is None:
        stages = default_mbtfe_stages(n_stages)
    elif stages == "all":
        stages = list(range(n_stages))
    resolved["mbtfe_stages"] = sorted(set(stages))
    if resolved["eab_stages"] is None:
        resolved["eab_stages"] = min(3, n_stages)
    return resolved


def knob_table_markdown() -> str:
    """The knob table of docs/how_to/mbtfe_adan_dice.md."""
    import json

    lines = ["| knob | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for k in KNOBS:
        lines.append(f"| `{k.name}` | `{json.dumps(k.default)}` | {k.allowed} | {k.doc} |")
    return "\n".join(lines)
