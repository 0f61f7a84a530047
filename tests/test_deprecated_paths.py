"""The import paths 0.2.0 moved keep working for this release: same objects, a DeprecationWarning naming the new path
and the release that removes the old one; the package's own imports raise none of these warnings."""

import ast
import importlib
import os
import subprocess
import sys
import warnings

import pytest

from nnunet_mvext._moved_modules import MOVED, REMOVED_IN

from test_import_graph import import_graph, package_modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_fresh(name: str):
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_and_holds_the_objects_of_the_new_modules(old):
    with pytest.warns(DeprecationWarning) as record:
        module = _import_fresh(old)
    messages = [str(w.message) for w in record if issubclass(w.category, DeprecationWarning)]
    ours = [m for m in messages if m.startswith(f"{old} moved to ")]
    assert len(ours) == 1, messages
    assert all(new in ours[0] for new in MOVED[old]) and f"removed in {REMOVED_IN}" in ours[0]
    for new in MOVED[old]:
        public = {k: v for k, v in vars(importlib.import_module(new)).items() if not k.startswith("_")}
        assert public
        for name, value in public.items():
            assert getattr(module, name) is value, f"{old}.{name} is not {new}.{name}"


@pytest.mark.parametrize("old, names", [
    ("nnunet_mvext.synthetic_dataset", ["generate_multiphase_dataset", "SyntheticDataset", "new_dataset_folder"]),
    ("nnunet_mvext.synthetic_lesion_types", ["generate_lesion_types_dataset"]),
    ("nnunet_mvext.synthetic_shape_dataset", ["generate_shape_dataset", "SHAPE_CLASSES", "make_shape_case"]),
    ("nnunet_mvext.trainer_settings", ["SETTINGS", "resolve_trainer_settings", "validate_raw_settings"]),
    ("nnunet_mvext.mbtfe_planner", ["MBTFEPlanner", "EstimateRecordingPlanner", "plan_dataset", "PRESETS"]),
    ("nnunet_mvext.classification.fusion_memory", ["FusionPlanner", "memory_note", "log_fusion_memory"]),
])
def test_the_names_users_imported_from_an_old_path_are_there(old, names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = _import_fresh(old)
    assert [n for n in names if not hasattr(module, n)] == []


def test_a_script_importing_an_old_path_shows_the_warning_at_its_import_line(tmp_path):
    """Python shows a DeprecationWarning by default only when it is attributed to ``__main__``: the warning must point
    at the user's import, not at the package."""
    script = tmp_path / "user_script.py"
    script.write_text("import os\nfrom nnunet_mvext.synthetic_dataset import generate_multiphase_dataset\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTHONWARNINGS", None)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert ("user_script.py:2: DeprecationWarning: nnunet_mvext.synthetic_dataset moved to "
            "nnunet_mvext.synthetic.multiphase") in result.stderr, result.stderr


def test_importing_every_module_of_the_package_raises_no_deprecation_warning_of_ours():
    """In a fresh interpreter (nothing imported yet), every module but the old paths, with every warning recorded."""
    modules = [m for m in package_modules() if m not in MOVED]
    code = "\n".join([
        "import importlib, sys, warnings",
        "with warnings.catch_warnings(record=True) as record:",
        "    warnings.simplefilter('always')",
        f"    for name in {modules!r}:",
        "        importlib.import_module(name)",
        f"ours = [str(w.message) for w in record if 'removed in {REMOVED_IN}' in str(w.message)]",
        f"leaked = sorted(set({list(MOVED)!r}) & set(sys.modules))",
        "print(repr((ours, leaked)))",
    ])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    ours, leaked = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert len(modules) > 50
    assert ours == [] and leaked == [], (ours, leaked)


def test_no_module_of_the_package_imports_a_deprecated_path():
    graph = import_graph()
    assert set(MOVED) <= set(graph), sorted(set(MOVED) - set(graph))
    users = {module: sorted(targets & set(MOVED)) for module, targets in graph.items()
             if module not in MOVED and targets & set(MOVED)}
    assert not users, f"modules importing a deprecated path (import the new one): {users}"
