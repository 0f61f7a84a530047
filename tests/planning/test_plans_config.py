import json

import pytest

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.planning.plans_config import add_configuration, available_templates, load_template

DATASET = "Dataset777_Toy"


def _plans(strides):
    n = len(strides)
    return {
        "dataset_name": DATASET, "plans_name": "nnUNetPlans",
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2, "patch_size": [40, 160, 160],
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {"n_stages": n, "features_per_stage": [32 * 2 ** i for i in range(n)],
                                "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n,
                                "strides": strides, "n_conv_per_stage": [2] * n,
                                "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
                                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                                "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}


@pytest.fixture
def plans_file(tmp_path, monkeypatch):
    folder = tmp_path / "pre" / DATASET
    folder.mkdir(parents=True)
    path = folder / "nnUNetPlans.json"
    path.write_text(json.dumps(_plans([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]])))
    for var in ("nnUNet_raw", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    return path


def test_shipped_templates_are_valid():
    assert {"3d_fullres_adan", "3d_fullres_adan_dice", "3d_tiny_cpu"} <= set(available_templates())
    for name in available_templates():
        assert load_template(name)[1]["inherits_from"]


def test_tiny_template_truncates_an_anisotropic_plan(plans_file):
    path, name = add_configuration("777", "3d_tiny_cpu")
    plans = json.loads(plans_file.read_text())
    cfg = plans["configurations"][name]
    assert name == "3d_tiny_cpu" and cfg["inherits_from"] == "3d_fullres" and "data_identifier" not in cfg
    kw = cfg["architecture"]["arch_kwargs"]
    assert kw["n_stages"] == 3 and kw["features_per_stage"] == [8, 16, 32]
    assert kw["strides"] == [[1, 1, 1], [1, 2, 2], [2, 2, 2]] and len(kw["n_conv_per_stage_decoder"]) == 2
    assert cfg["trainer_settings"]["num_epochs"] == 2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    assert PlansManager(plans).get_configuration(name).data_identifier == "nnUNetPlans_3d_fullres"


def test_existing_configuration_is_not_overwritten_without_force(plans_file):
    add_configuration("777", "3d_fullres_adan")
    before = plans_file.read_text()
    with pytest.raises(MVExtError, match="'3d_fullres_adan' already exists.*--force"):
        add_configuration("777", "3d_fullres_adan")
    assert plans_file.read_text() == before
    add_configuration("777", "3d_fullres_adan_dice", name="3d_fullres_adan", force=True)
    cfg = json.loads(plans_file.read_text())["configurations"]["3d_fullres_adan"]
    assert cfg["trainer_settings"]["loss"] == "dice"


def _template(tmp_path, content):
    p = tmp_path / "my_template.json"
    p.write_text(json.dumps(content))
    return str(p)


@pytest.mark.parametrize("content,message", [
    ({"inherits_from": "3d_fullres", "configuration": {"trainer_settings": {"num_epocs": 3}}}, "'num_epocs'"),
    ({"inherits_from": "3d_lowres"}, "'3d_lowres'"),
    ({"inherits_from": "3d_fullres", "configuration": {"data_identifier": "x"}}, "'data_identifier'"),
    ({"inherits_from": "3d_fullres", "configuration": {"patch_size": [30, 30, 32]},
      "architecture_overrides": {"n_stages": 3}}, "not divisible"),
    ({"inherits_from": "3d_fullres", "configuration": {"patch_size": [32, 32]}}, "axes"),
    ({"inherits_from": "3d_fullres", "architecture_overrides": {"n_stages": 9}}, "'n_stages'"),
    ({"inherits_from": "3d_fullres", "architecture_overrides": {"n_stages": 3, "arch_kwargs": {
        "features_per_stage": [8, 16]}}}, "'features_per_stage' has 2 entries"),
    ({"inherits_from": "3d_fullres", "extra": 1}, "'extra'"),
])
def test_bad_templates_fail_before_writing(plans_file, tmp_path, content, message):
    before = plans_file.read_text()
    with pytest.raises(MVExtError, match=message):
        add_configuration("777", _template(tmp_path, content))
    assert plans_file.read_text() == before


def test_missing_plans_file_is_named(plans_file):
    with pytest.raises(MVExtError, match="nnUNetPlansXL.json does not exist"):
        add_configuration("777", "3d_fullres_adan", plans_identifier="nnUNetPlansXL")


def test_unknown_template_lists_shipped_ones(plans_file):
    with pytest.raises(MVExtError, match="3d_tiny_cpu"):
        add_configuration("777", "no_such_template")


def test_mbtfe_template_names_our_network_and_builds_through_nnunet(plans_file):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mvext.architectures.mbtfe_unet import MBTFEUNet

    _, name = add_configuration("777", "3d_fullres_mbtfe")
    cm = PlansManager(json.loads(plans_file.read_text())).get_configuration(name)
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 3, 3, deep_supervision=True)
    assert isinstance(net, MBTFEUNet) and net.mbtfe_stages == [2, 3] and len(net.eab.channels) == 3
    assert net.eab.pools[0].kernel_size == [1, 2, 2]


def test_a_configuration_inheriting_from_itself_is_refused_even_with_force(plans_file):
    before = plans_file.read_text()
    with pytest.raises(MVExtError, match="'3d_fullres' would inherit from itself"):
        add_configuration("777", "3d_fullres_adan", name="3d_fullres", force=True)
    assert plans_file.read_text() == before
    assert not list(plans_file.parent.glob("*.bak"))


def test_a_configuration_that_closes_an_inheritance_cycle_is_refused(plans_file):
    add_configuration("777", "3d_fullres_adan", name="child")
    before = plans_file.read_text()
    plans = json.loads(before)
    plans["configurations"]["grandchild"] = {"inherits_from": "child"}
    plans_file.write_text(json.dumps(plans))
    before = plans_file.read_text()
    template = {"inherits_from": "grandchild"}
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(template, f)
    with pytest.raises(MVExtError, match="circular"):
        add_configuration("777", f.name, name="child", force=True)
    assert plans_file.read_text() == before


def test_rewriting_the_plans_keeps_a_backup_of_the_previous_file(plans_file):
    original = plans_file.read_text()
    add_configuration("777", "3d_fullres_adan")
    (backup,) = plans_file.parent.glob("nnUNetPlans.json.*.bak")
    assert backup.read_text() == original
    assert "3d_fullres_adan" in json.loads(plans_file.read_text())["configurations"]


def test_a_plans_file_with_a_syntax_error_is_named(plans_file):
    plans_file.write_text(plans_file.read_text()[:-1] + ",}")
    with pytest.raises(MVExtError, match=r"nnUNetPlans.json is not valid JSON.*line"):
        add_configuration("777", "3d_fullres_adan")
