"""``nnunet-mvext add-config``: write a configuration from a JSON template into a dataset's plans file.

A template (``nnunet_mvext/plans_templates/NAME.json`` or any JSON file) looks like::

    {
      "description": "what it is for",
      "inherits_from": "3d_fullres",
      "configuration": {"patch_size": [32, 32, 32], "trainer_settings": {"num_epochs": 2}},
      "architecture_overrides": {"n_stages": 3, "arch_kwargs": {"features_per_stage": [8, 16, 32]}}
    }

The new configuration inherits from ``inherits_from`` (nnU-Net's own ``inherits_from`` mechanism), so it keeps the
parent's ``data_identifier`` and trains on the already preprocessed data. ``configuration`` keys are copied as they
are (``trainer_settings`` is validated first). ``architecture_overrides`` is applied to a copy of the parent's
``architecture``: ``n_stages`` truncates every per-stage list of ``arch_kwargs`` (features, kernel sizes, strides,
convs per stage; decoder lists to ``n_stages - 1``), ``arch_kwargs`` replaces single keys, ``network_class_name``
replaces the class. Nothing is written unless every check passes.
"""

from __future__ import annotations

import json
import os
from copy import deepcopy
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.json_files import read_json, write_json_with_backup
from nnunet_mvext.training_setup.trainer_settings import validate_raw_settings

TEMPLATE_KEYS = {"description", "inherits_from", "configuration", "architecture_overrides"}
ARCH_OVERRIDE_KEYS = {"n_stages", "arch_kwargs", "network_class_name", "_kw_requires_import"}
ENCODER_STAGE_LISTS = ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage", "n_blocks_per_stage")
DECODER_STAGE_LISTS = ("n_conv_per_stage_decoder",)
FORBIDDEN_CONFIG_KEYS = {"data_identifier": "it must stay the parent's so the preprocessed data is reused",
                         "inherits_from": "set it at the template's top level"}


def available_templates() -> list[str]:
    """Names of the templates shipped in ``nnunet_mvext/plans_templates``."""
    folder = resources.files("nnunet_mvext") / "plans_templates"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_template(template: str) -> tuple[str, dict]:
    """``(name, template)`` for a shipped template name or a path to a JSON file."""
    if os.path.isfile(template):
        path, name = template, os.path.splitext(os.path.basename(template))[0]
        text = Path(path).read_text()
    else:
        name = template[:-5] if template.endswith(".json") else template
        candidate = resources.files("nnunet_mvext") / "plans_templates" / f"{name}.json"
        if not candidate.is_file():
            raise MVExtError(f"Template '{template}' is neither a file nor a shipped template. "
                             f"Shipped templates: {', '.join(available_templates())}.")
        path, text = str(candidate), candidate.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MVExtError(f"Template {path} is not valid JSON: {e}") from None
    return name, validate_template(data, path)


def validate_template(template: dict, source: str) -> dict:
    """Check the template's own structure (checks that need the plans come in :func:`build_configuration`)."""
    if not isinstance(template, dict):
        raise MVExtError(f"Template {source} must be a JSON object.")
    unknown = set(template) - TEMPLATE_KEYS
    if unknown:
        raise MVExtError(f"Template {source}: unknown key(s) {sorted(unknown)}. Allowed: {sorted(TEMPLATE_KEYS)}.")
    if not isinstance(template.get("inherits_from"), str):
        raise MVExtError(f"Template {source}: key 'inherits_from' must name the parent configuration "
                         f"(e.g. \"3d_fullres\").")
    config = template.get("configuration", {})
    if not isinstance(config, dict):
        raise MVExtError(f"Template {source}: key 'configuration' must be a JSON object.")
    for key, why in FORBIDDEN_CONFIG_KEYS.items():
        if key in config:
            raise MVExtError(f"Template {source}: configuration key '{key}' is not allowed here: {why}.")
    validate_raw_settings(config.get("trainer_settings"), f"template {source}")
    for key in ("patch_size",):
        if key in config and not (isinstance(config[key], list) and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in config[key])):
            raise MVExtError(f"Template {source}: configuration key '{key}' must be a list of positive integers.")
    if "batch_size" in config and not (isinstance(config["batch_size"], int) and config["batch_size"] >= 1):
        raise MVExtError(f"Template {source}: configuration key 'batch_size' must be an integer >= 1.")
    overrides = template.get("architecture_overrides", {})
    if not isinstance(overrides, dict):
        raise MVExtError(f"Template {source}: key 'architecture_overrides' must be a JSON object.")
    unknown = set(overrides) - ARCH_OVERRIDE_KEYS
    if unknown:
        raise MVExtError(f"Template {source}: unknown architecture_overrides key(s) {sorted(unknown)}. "
                         f"Allowed: {sorted(ARCH_OVERRIDE_KEYS)}.")
    return template


def _truncate_stages(arch_kwargs: dict, n_stages: int, where: str) -> None:
    parent_stages = arch_kwargs["n_stages"]
    if not isinstance(n_stages, int) or not 2 <= n_stages <= parent_stages:
        raise MVExtError(f"{where}: architecture_overrides key 'n_stages' is {n_stages!r}; allowed: an integer from "
                         f"2 to the parent's {parent_stages}.")
    arch_kwargs["n_stages"] = n_stages
    for key in ENCODER_STAGE_LISTS:
        if isinstance(arch_kwargs.get(key), list):
            arch_kwargs[key] = arch_kwargs[key][:n_stages]
    for key in DECODER_STAGE_LISTS:
        if isinstance(arch_kwargs.get(key), list):
            arch_kwargs[key] = arch_kwargs[key][:n_stages - 1]


def _check_architecture(arch_kwargs: dict, patch_size: list, where: str) -> None:
    n = arch_kwargs["n_stages"]
    for key in ENCODER_STAGE_LISTS:
        value = arch_kwargs.get(key)
        if isinstance(value, list) and len(value) != n:
            raise MVExtError(f"{where}: arch_kwargs '{key}' has {len(value)} entries but n_stages is {n}.")
    for key in DECODER_STAGE_LISTS:
        value = arch_kwargs.get(key)
        if isinstance(value, list) and len(value) != n - 1:
            raise MVExtError(f"{where}: arch_kwargs '{key}' has {len(value)} entries but needs n_stages - 1 = {n - 1}.")
    strides = np.array([s if isinstance(s, list) else [s] * len(patch_size) for s in arch_kwargs["strides"]])
    if strides.shape[1] != len(patch_size):
        raise MVExtError(f"{where}: patch_size {patch_size} has {len(patch_size)} axes but the strides have "
                         f"{strides.shape[1]}.")
    divisor = np.prod(strides, axis=0)
    if any(p % d for p, d in zip(patch_size, divisor)):
        raise MVExtError(f"{where}: patch_size {patch_size} is not divisible by the network's total stride "
                         f"{divisor.tolist()} on every axis.")


def build_configuration(plans: dict, template: dict, where: str) -> dict:
    """The configuration entry to store in ``plans['configurations']`` (plans are not modified)."""
    parent_name = template["inherits_from"]
    if parent_name not in plans["configurations"]:
        raise MVExtError(f"{where}: inherits_from names configuration '{parent_name}', which the plans file does not "
                         f"have. Available: {sorted(plans['configurations'])}.")
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    parent = PlansManager(plans).get_configuration(parent_name).configuration
    entry = {"inherits_from": parent_name, **deepcopy(template.get("configuration", {}))}
    patch_size = entry.get("patch_size", parent["patch_size"])
    if len(patch_size) != len(parent["patch_size"]):
        raise MVExtError(f"{where}: configuration key 'patch_size' {patch_size} has {len(patch_size)} axes but "
                         f"'{parent_name}' has {len(parent['patch_size'])}.")
    overrides = template.get("architecture_overrides")
    architecture = deepcopy(parent["architecture"])
    if overrides:
        if "n_stages" in overrides:
            _truncate_stages(architecture["arch_kwargs"], overrides["n_stages"], where)
        architecture["arch_kwargs"].update(deepcopy(overrides.get("arch_kwargs", {})))
        for key in ("network_class_name", "_kw_requires_import"):
            if key in overrides:
                architecture[key] = deepcopy(overrides[key])
        entry["architecture"] = architecture
    _check_architecture(architecture["arch_kwargs"], patch_size, where)
    return entry


def add_configuration(dataset: str, template: str, name: Optional[str] = None, plans_identifier: str = "nnUNetPlans",
                      force: bool = False, extra_trainer_settings: Optional[dict] = None) -> tuple[str, str]:
    """Add the template's configuration to ``nnUNet_preprocessed/<dataset>/<plans_identifier>.json``.

    Returns ``(plans_file, configuration_name)``. Refuses to replace an existing configuration unless ``force``.
    ``extra_trainer_settings`` (validated like the template's) is merged over the template's ``trainer_settings``.
    """
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    template_name, tmpl = load_template(template)
    if extra_trainer_settings:
        tmpl = deepcopy(tmpl)
        settings = {**tmpl.setdefault("configuration", {}).get("trainer_settings", {}), **extra_trainer_settings}
        validate_raw_settings(settings, f"template {template_name}")
        tmpl["configuration"]["trainer_settings"] = settings
    name = name or template_name
    if not nnUNet_preprocessed.is_set():
        raise MVExtError("nnUNet_preprocessed is not set; add-config edits a plans file in nnUNet_preprocessed.")
    try:
        dataset_name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise MVExtError(f"Dataset '{dataset}' not found: {e}") from None
    plans_file = os.path.join(str(nnUNet_preprocessed), dataset_name, f"{plans_identifier}.json")
    if not os.path.isfile(plans_file):
        raise MVExtError(f"Plans file {plans_file} does not exist. Run nnUNetv2_plan_and_preprocess -d {dataset} "
                         f"first (or pass --plans with an existing plans name).")
    plans = read_json(plans_file, "Plans file")
    if name == tmpl["inherits_from"]:
        raise MVExtError(f"Configuration '{name}' would inherit from itself (the template's inherits_from is "
                         f"'{name}'); that would replace the original '{name}' in {plans_file}. Choose another "
                         f"--name.")
    if name in plans["configurations"] and not force:
        raise MVExtError(f"Configuration '{name}' already exists in {plans_file}; refusing to overwrite it. "
                         f"Use --force to replace it or --name to choose another name.")
    entry = build_configuration(plans, tmpl, f"template '{template_name}' for {plans_file}")
    configurations = {**plans["configurations"], name: entry}
    _check_no_inheritance_cycle(configurations, name, plans_file)
    plans["configurations"] = configurations
    write_json_with_backup(plans_file, plans)
    return plans_file, name


def _check_no_inheritance_cycle(configurations: dict, changed: str, plans_file: str) -> None:
    """Every configuration's ``inherits_from`` chain must end; names the first cycle through ``changed``."""
    for start in configurations:
        chain, current = [start], configurations[start].get("inherits_from")
        while current is not None:
            if current in chain:
                raise MVExtError(f"Writing configuration '{changed}' into {plans_file} would make the inheritance "
                                 f"chain {' -> '.join(chain + [current])} circular; choose another --name.")
            chain.append(current)
            current = configurations.get(current, {}).get("inherits_from")
