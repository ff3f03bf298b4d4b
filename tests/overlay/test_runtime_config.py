"""The runtime side: config.toml read back at boot, and the launcher's text menu."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.config import RuntimeConfig
from builder.render import render_overlay_files
from rescuekit.config import Settings, load_settings
from rescuekit.errors import RescueError

RUNTIME = Path(__file__).resolve().parents[2] / "winpe_overlay" / "rescuekit"


def test_settings_round_trip_from_rendered_config(tmp_path):
    cfg = RuntimeConfig(default_action="restore", repository="\\\\nas\\img", target="\\\\.\\PhysicalDrive2",
                        image="golden", locale="fr-FR", network=True, build_time="2026-01-01T00:00:00Z")
    path = tmp_path / "config.toml"
    path.write_text(render_overlay_files(cfg, [])["rescuekit/config.toml"])
    s = load_settings(path)
    assert s == Settings(default_action="restore", repository="\\\\nas\\img", image="golden",
                         target="\\\\.\\PhysicalDrive2", locale="fr-FR", shell="startnet", network=True,
                         tool_version=cfg.tool_version, build_time="2026-01-01T00:00:00Z")


def test_config_file_problems(tmp_path, monkeypatch):
    assert load_settings(tmp_path / "missing.toml") == Settings()
    bad = tmp_path / "c.toml"
    for text, msg in [("[rescuekit\n", "bad config file"),
                      ("[rescuekit]\nnetwork = 'yes'\n", "network must be a bool"),
                      ("[rescuekit]\ndefault_action = 'wipe'\n", "default_action 'wipe'")]:
        bad.write_text(text)
        with pytest.raises(RescueError, match=msg):
            load_settings(bad)
    bad.write_text("[rescuekit]\nrepository = 'E:\\x'\nfuture_key = 1\n")
    monkeypatch.setenv("RESCUEKIT_CONFIG", str(bad))
    assert load_settings().repository == "E:\\x"


def test_menu_reads_the_builds_repository_and_exits_to_the_prompt(tmp_path):
    repo = tmp_path / "no repo here"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[rescuekit]\nrepository = {str(repo)!r}\n")
    env = {**os.environ, "RESCUEKIT_CONFIG": str(cfg)}
    for entry in (["-m", "rescuekit", "menu"], ["-m", "rescuekit.menu"]):  # the verb, and the old module entry
        r = subprocess.run([sys.executable, "-B", *entry, "--no-scan", "--log-dir", str(tmp_path / "logs")],
                           input="1\n\n99\n6\n0\n", capture_output=True, text=True, env=env)
        assert r.returncode == 0 and r.stderr == "", r.stdout + r.stderr
        assert "No rescuekit repository was found" in r.stdout  # the build's folder does not exist
        assert "there is no entry 99" in r.stdout and "6 cannot be chosen: bcdboot is not on this system" in r.stdout
    # end of input (no console) also returns to the prompt
    r = subprocess.run([sys.executable, "-B", "-m", "rescuekit", "menu", "--no-scan", "--log-dir",
                        str(tmp_path / "logs")], input="", capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "Main menu" in r.stdout


def test_menu_import_stays_light():
    """Every verb imports rescuekit.menu at start: it must not pull in the UI (rich) or the flows."""
    code = ("import sys; import rescuekit.cli as c; c._register_all(c.cli, c.COMMAND_MODULES); "
            "print(sorted(m for m in sys.modules if m.startswith(('rich', 'rescuekit.tui', 'rescuekit.menu_app'))))")
    r = subprocess.run([sys.executable, "-B", "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_menu_with_a_damaged_config_file_says_so_in_one_line(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[rescuekit\n")
    r = subprocess.run([sys.executable, "-B", "-m", "rescuekit", "menu"], input="0\n", capture_output=True, text=True,
                       env={**os.environ, "RESCUEKIT_CONFIG": str(cfg)})
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"rescuekit: error: bad config file {cfg}: ") and len(r.stderr.splitlines()) == 1


def test_runtime_package_never_imports_builder():
    for py in RUNTIME.rglob("*.py"):
        text = py.read_text(encoding="utf-8")
        assert "import builder" not in text and "from builder" not in text, py


def test_target_auto_and_then_are_checked_at_build_time():
    from builder.config import RuntimeConfig
    from rescuekit.errors import UsageError

    auto = RuntimeConfig(default_action="restore", repository="D:\\Images", target="auto", then="reboot")
    files = render_overlay_files(auto, [])
    assert "-B -m rescuekit menu" in files["rescuekit/launch.cmd"]
    assert 'target = "auto"' in files["rescuekit/config.toml"] and 'then = "reboot"' in files["rescuekit/config.toml"]
    with pytest.raises(UsageError, match="invalid --target 'auto'"):  # auto picks a disk to overwrite, not to read
        RuntimeConfig(default_action="capture", repository="D:\\Images", target="auto").validated()
    rules = RuntimeConfig(default_action="restore", repository="D:\\Images", target="auto:model=*SSD*,size~500GB")
    files = render_overlay_files(rules, [])
    assert "-B -m rescuekit menu" in files["rescuekit/launch.cmd"]
    assert 'target = "auto:model=*SSD*,size~500GB"' in files["rescuekit/config.toml"]
    with pytest.raises(UsageError, match="bad rule 'colour=red'"):
        RuntimeConfig(default_action="restore", repository="D:\\Images", target="auto:colour=red").validated()
    with pytest.raises(UsageError, match="model takes '=GLOB'"):
        RuntimeConfig(default_action="restore", repository="D:\\Images", target='auto:model=a"b').validated()
    with pytest.raises(UsageError, match="invalid --then 'later'"):
        RuntimeConfig(then="later").validated()
