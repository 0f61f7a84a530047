import os
import subprocess
import sys
import textwrap

from nnunet_mvext import _startup_hook as hook
from nnunet_mvext import entry_point_bridge as bridge

OUR_TRAINERS = ("nnUNetTrainerMV", "nnUNetTrainerMVAdan", "nnUNetTrainerMVDiceLoss")


def _python(code: str, env_update: dict, drop=("nnUNet_extTrainer", "NNUNET_MVEXT_NO_AUTOREGISTER"), cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_update)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_user_value_is_kept_and_lookup_folder_appended_once():
    value = hook.ext_trainer_value_with_lookup_folder(os.pathsep.join(["/a", "/b"]))
    assert value.split(os.pathsep) == ["/a", "/b", hook.LOOKUP_FOLDER]
    assert hook.ext_trainer_value_with_lookup_folder(value) == value
    assert hook.ext_trainer_value_with_lookup_folder(None) == hook.LOOKUP_FOLDER


def test_activate_respects_the_switch():
    env = {hook.DISABLE_ENV: "1", "nnUNet_extTrainer": "/mine"}
    assert hook.activate(env) is False and env["nnUNet_extTrainer"] == "/mine"
    env = {"nnUNet_extTrainer": "/mine"}
    assert hook.activate(env) is True
    assert env["nnUNet_extTrainer"] == os.pathsep.join(["/mine", hook.LOOKUP_FOLDER])


def test_lookup_folder_holds_exactly_one_module():
    modules = [f for f in os.listdir(hook.LOOKUP_FOLDER) if f.endswith(".py")]
    assert modules == ["nnunet_mvext_entry_point_trainers.py"]
    assert not os.path.exists(os.path.join(hook.LOOKUP_FOLDER, "__init__.py"))


PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(hook.__file__)))
REPO_PTH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nnunet_mvext_autoregister.pth")
HOOK_MODULES = {"nnunet_mvext", "nnunet_mvext._startup_hook"}


def test_startup_hook_module_imports_nothing_but_itself():
    """With -S (no site, no .pth) import the hook by hand: it may load only nnunet_mvext and itself (``site`` has
    loaded os before it reads a .pth), so nnunet_mvext/__init__.py and the hook must stay import-free."""
    r = subprocess.run([sys.executable, "-S", "-c", textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {PACKAGE_PARENT!r})
        before = set(sys.modules)
        import nnunet_mvext._startup_hook
        print(sorted(set(sys.modules) - before))
    """)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert set(eval(r.stdout)) == HOOK_MODULES, r.stdout


def test_interpreter_start_runs_only_the_startup_hook():
    """A plain interpreter start (the installed .pth runs) loads the hook but neither the entry-point discovery nor
    importlib.metadata/dataclasses, with the switch on or off."""
    code = """
        import os, sys
        print(os.environ.get('nnUNet_extTrainer'))
        print(sorted(m for m in sys.modules
                     if m.startswith('nnunet_mvext') or m in ('importlib.metadata', 'dataclasses')))
    """
    r = _python(code, {})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    ext, modules = r.stdout.splitlines()
    assert ext == hook.LOOKUP_FOLDER
    assert set(eval(modules)) == HOOK_MODULES
    r = _python(code, {hook.DISABLE_ENV: "1"})
    ext, modules = r.stdout.splitlines()
    assert ext == "None" and set(eval(modules)) == HOOK_MODULES, r.stdout


def test_installed_pth_is_the_repositorys():
    """The .pth that pip installed (wheel or editable, via hatchling's force-include) is this checkout's line."""
    from importlib import metadata

    files = [f for f in metadata.distribution("nnunet-mvext").files if f.name == "nnunet_mvext_autoregister.pth"]
    assert len(files) == 1 and len(files[0].parts) == 1, files  # at the root of site-packages
    with open(files[0].locate()) as installed, open(REPO_PTH) as repo:
        assert installed.read() == repo.read(), "reinstall: pip install -e ."


def test_stale_pth_is_silent(tmp_path):
    """A .pth left behind while the package is gone (editable checkout moved or deleted) prints nothing."""
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    with open(REPO_PTH) as f:
        (site_dir / "nnunet_mvext_autoregister.pth").write_text(f.read())
    (site_dir / "_editable_impl_nnunet_mvext.pth").write_text(str(tmp_path / "moved_checkout") + "\n")
    code = "import os, site; site.addsitedir(%r); print(os.environ.get('nnUNet_extTrainer'))"
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", hook.DISABLE_ENV)}
    r = subprocess.run([sys.executable, "-S", "-c", code % str(site_dir)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "None\n", (r.stdout, r.stderr)

    # the same .pth with the package reachable does run: the silence above is not a .pth that never ran
    (site_dir / "_editable_impl_nnunet_mvext.pth").write_text(PACKAGE_PARENT + "\n")
    r = subprocess.run([sys.executable, "-S", "-c", code % str(site_dir)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == hook.LOOKUP_FOLDER + "\n", (r.stdout, r.stderr)


def test_leaked_variable_without_the_package_gives_nnunets_own_message():
    """nnUNet_extTrainer exported into an environment where nnunet_mvext cannot be imported: nnU-Net's lookup ends
    with its own "Could not find" message, no ModuleNotFoundError from the lookup module."""
    r = _python("""
        import sys
        for name in [m for m in sys.modules if m.startswith('nnunet_mvext')]:
            del sys.modules[name]
        sys.modules['nnunet_mvext'] = None  # not importable, as in an environment without the package
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find
        try:
            find('nnUNetTrainerMVAdan')
        except RuntimeError as e:
            print('NNUNET SAYS', e)
    """, {hook.DISABLE_ENV: "1", "nnUNet_extTrainer": hook.LOOKUP_FOLDER})
    assert r.returncode == 0, r.stderr
    assert "NNUNET SAYS Could not find requested nnunet trainer nnUNetTrainerMVAdan" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "ModuleNotFoundError" not in r.stderr, r.stderr
    assert f"nnUNet_extTrainer lists {hook.LOOKUP_FOLDER}" in r.stderr and "cannot import nnunet_mvext" in r.stderr


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
    assert f"EXT={hook.LOOKUP_FOLDER}" in r.stdout
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
    r = _python(code, {hook.DISABLE_ENV: "1"}, drop=("nnUNet_extTrainer",))
    assert "MISSING Could not find requested nnunet trainer nnUNetTrainerMVAdan" in r.stdout, r.stdout + r.stderr

    shell = (f'eval "$("{sys.executable}" -m nnunet_mvext.cli env)" && '
             f'"{sys.executable}" -c "import os; print(os.environ[\'nnUNet_extTrainer\'])"')
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env[hook.DISABLE_ENV] = "1"
    out = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == hook.LOOKUP_FOLDER, out.stderr
    r = _python(code, {hook.DISABLE_ENV: "1", "nnUNet_extTrainer": out.stdout.strip()}, drop=())
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
    assert f"EXT={mine}{os.pathsep}{hook.LOOKUP_FOLDER}" in r.stdout
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
    (dist_info / "entry_points.txt").write_text("[nnunetv2.trainers]\n"
                                                "nnUNetTrainerAdan = shadow_mod:nnUNetTrainerAdan\n")
    (site / "shadow_mod.py").write_text(textwrap.dedent("""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        class nnUNetTrainerAdan(nnUNetTrainer):
            pass
    """))
    listing = subprocess.run([sys.executable, "-m", "nnunet_mvext.cli", "trainers"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(site)}, timeout=300)
    row = [r for r in listing.stdout.splitlines() if r.startswith("nnUNetTrainerAdan ")][0]
    assert row.endswith("no: SHADOWED by nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdan."
                        "nnUNetTrainerAdan, an nnU-Net built-in"), row
    assert "WARNING: 'nnUNetTrainerAdan' from shadow-plugin is shadowed" in listing.stderr
    assert "rename yours" in listing.stderr and listing.returncode == 0
    for name in OUR_TRAINERS:  # ours are listed as resolving, with our distribution's name
        ours = [r for r in listing.stdout.splitlines() if r.startswith(name + " ")]
        assert ours and "nnunet-mvext" in ours[0] and ours[0].rstrip().endswith("yes"), listing.stdout


def test_trainers_command_names_the_users_folder_that_shadows_ours(tmp_path):
    """A class of the same name in the user's own nnUNet_extTrainer folder (searched before ours) wins nnU-Net's
    lookup: the row and the warning name that folder and do not blame an nnU-Net built-in."""
    mine = tmp_path / "my_trainers"
    mine.mkdir()
    (mine / "my_adan.py").write_text(textwrap.dedent("""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        class nnUNetTrainerMVAdan(nnUNetTrainer):
            pass
    """))
    env = {k: v for k, v in os.environ.items() if k != hook.DISABLE_ENV}
    env["nnUNet_extTrainer"] = str(mine)
    listing = subprocess.run([sys.executable, "-m", "nnunet_mvext.cli", "trainers"], capture_output=True, text=True,
                             env=env, timeout=300)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    row = [r for r in listing.stdout.splitlines() if r.startswith("nnUNetTrainerMVAdan ")][0]
    assert row.endswith(f"no: SHADOWED by my_adan.nnUNetTrainerMVAdan from the nnUNet_extTrainer folder {mine}"), row
    warning = [w for w in listing.stderr.splitlines() if w.startswith("WARNING: 'nnUNetTrainerMVAdan'")]
    assert warning and str(mine) in warning[0] and "built-in" not in warning[0], listing.stderr
    assert "take that folder off nnUNet_extTrainer" in warning[0]


def test_trainers_command_fails_when_nothing_resolves():
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env[hook.DISABLE_ENV] = "1"
    listing = subprocess.run([sys.executable, "-m", "nnunet_mvext.cli", "trainers"], capture_output=True, text=True,
                             env=env, timeout=300)
    assert listing.returncode == 1, listing.stdout + listing.stderr
    for name in OUR_TRAINERS:
        row = [r for r in listing.stdout.splitlines() if r.startswith(name + " ")][0]
        assert row.endswith("no: not found (nnUNet_extTrainer lacks this package's lookup folder; "
                            "see 'nnunet-mvext env')"), row
    assert "ERROR: nnU-Net's lookup resolves none of the" in listing.stderr
