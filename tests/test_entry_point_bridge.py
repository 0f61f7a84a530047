import os
import subprocess
import sys
import textwrap

from nnunet_mvext import entry_point_bridge as bridge

OUR_TRAINERS = ("nnUNetTrainerMV", "nnUNetTrainerMVAdan", "nnUNetTrainerMVDiceLoss")


def _python(code: str, env_update: dict, drop=("nnUNet_extTrainer", "NNUNET_MVEXT_NO_AUTOREGISTER"), cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_update)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_user_value_is_kept_and_lookup_folder_appended_once():
    value = bridge.ext_trainer_value_with_lookup_folder(os.pathsep.join(["/a", "/b"]))
    assert value.split(os.pathsep) == ["/a", "/b", bridge.LOOKUP_FOLDER]
    assert bridge.ext_trainer_value_with_lookup_folder(value) == value
    assert bridge.ext_trainer_value_with_lookup_folder(None) == bridge.LOOKUP_FOLDER


def test_activate_respects_the_switch():
    env = {bridge.DISABLE_ENV: "1", "nnUNet_extTrainer": "/mine"}
    assert bridge.activate(env) is False and env["nnUNet_extTrainer"] == "/mine"
    env = {"nnUNet_extTrainer": "/mine"}
    assert bridge.activate(env) is True
    assert env["nnUNet_extTrainer"] == os.pathsep.join(["/mine", bridge.LOOKUP_FOLDER])


def test_lookup_folder_holds_exactly_one_module():
    modules = [f for f in os.listdir(bridge.LOOKUP_FOLDER) if f.endswith(".py")]
    assert modules == ["nnunet_mvext_entry_point_trainers.py"]
    assert not os.path.exists(os.path.join(bridge.LOOKUP_FOLDER, "__init__.py"))


def test_every_declared_trainer_of_ours_is_in_the_group():
    declared = {t.name: t for t in bridge.declared_trainers()}
    for name in OUR_TRAINERS:
        assert declared[name].distribution == "nnunet-mvext"
        assert declared[name].load().__name__ == name
    assert bridge.load_declared_trainer("NoSuchTrainer") is None


def test_fresh_interpreter_is_registered_without_any_export():
    """The .pth hook: a new Python process with nnUNet_extTrainer unset resolves our trainers via nnU-Net."""
    r = _python("""
        import os
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find
        print('EXT=' + os.environ['nnUNet_extTrainer'])
        for n in %r:
            c = find(n)
            print('FOUND', n, c.__module__)
    """ % (OUR_TRAINERS,), {})
    assert r.returncode == 0, r.stderr
    assert f"EXT={bridge.LOOKUP_FOLDER}" in r.stdout
    for name in OUR_TRAINERS:
        assert f"FOUND {name} nnunet_mvext.trainers." in r.stdout


def test_switch_off_then_explicit_env_works(tmp_path):
    code = """
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find
        try:
            print('FOUND', find('nnUNetTrainerMVAdan').__name__)
        except RuntimeError as e:
            print('MISSING', e)
    """
    r = _python(code, {bridge.DISABLE_ENV: "1"}, drop=("nnUNet_extTrainer",))
    assert "MISSING Could not find requested nnunet trainer nnUNetTrainerMVAdan" in r.stdout, r.stdout + r.stderr

    shell = (f'eval "$("{sys.executable}" -m nnunet_mvext.cli env)" && '
             f'"{sys.executable}" -c "import os; print(os.environ[\'nnUNet_extTrainer\'])"')
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env[bridge.DISABLE_ENV] = "1"
    out = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == bridge.LOOKUP_FOLDER, out.stderr
    r = _python(code, {bridge.DISABLE_ENV: "1", "nnUNet_extTrainer": out.stdout.strip()}, drop=())
    assert "FOUND nnUNetTrainerMVAdan" in r.stdout, r.stdout + r.stderr


def test_user_ext_folder_is_kept_and_searched_first(tmp_path):
    mine = tmp_path / "my_trainers"
    mine.mkdir()
    (mine / "my_trainer.py").write_text(textwrap.dedent("""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        class MyOwnTrainer(nnUNetTrainer):
            pass
    """))
    r = _python("""
        import os
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find
        print('EXT=' + os.environ['nnUNet_extTrainer'])
        print('FOUND', find('MyOwnTrainer').__name__, find('nnUNetTrainerMVAdan').__name__)
    """, {"nnUNet_extTrainer": str(mine)})
    assert r.returncode == 0, r.stderr
    assert f"EXT={mine}{os.pathsep}{bridge.LOOKUP_FOLDER}" in r.stdout
    assert "FOUND MyOwnTrainer nnUNetTrainerMVAdan" in r.stdout


def test_trainer_declared_by_another_distribution_is_found(tmp_path):
    """Any installed distribution's entry points count, not only ours."""
    site = tmp_path / "site"
    dist_info = site / "other_plugin-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: other-plugin\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[nnunetv2.trainers]\nnnUNetTrainerOtherPlugin = other_plugin_trainers:nnUNetTrainerOtherPlugin\n")
    (site / "other_plugin_trainers.py").write_text(textwrap.dedent("""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        class nnUNetTrainerOtherPlugin(nnUNetTrainer):
            pass
    """))
    r = _python("""
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find
        c = find('nnUNetTrainerOtherPlugin')
        print('FOUND', c.__module__, c.__name__)
    """, {"PYTHONPATH": str(site)})
    assert "FOUND other_plugin_trainers nnUNetTrainerOtherPlugin" in r.stdout, r.stdout + r.stderr

    listing = subprocess.run([sys.executable, "-m", "nnunet_mvext.cli", "trainers"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(site)}, timeout=300)
    line = [row for row in listing.stdout.splitlines() if row.startswith("nnUNetTrainerOtherPlugin")]
    assert line and "other-plugin" in line[0] and line[0].rstrip().endswith("yes"), listing.stdout


def test_trainers_command_warns_when_a_builtin_shadows_a_name(tmp_path):
    site = tmp_path / "site"
    dist_info = site / "shadow_plugin-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow-plugin\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[nnunetv2.trainers]\nnnUNetTrainerAdan = shadow_mod:nnUNetTrainerAdan\n")
    (site / "shadow_mod.py").write_text(textwrap.dedent("""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        class nnUNetTrainerAdan(nnUNetTrainer):
            pass
    """))
    listing = subprocess.run([sys.executable, "-m", "nnunet_mvext.cli", "trainers"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(site)}, timeout=300)
    row = [r for r in listing.stdout.splitlines() if r.startswith("nnUNetTrainerAdan ")][0]
    assert "SHADOWED by nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdan" in row
    assert "WARNING: 'nnUNetTrainerAdan' from shadow-plugin is shadowed" in listing.stderr
    for name in OUR_TRAINERS:
        ours = [r for r in listing.stdout.splitlines() if r.startswith(name + " ")]
        assert ours and ours[0].rstrip().endswith("yes"), listing.stdout
