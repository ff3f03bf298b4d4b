"""The rendered startnet.cmd and launch.cmd of the built ISO in Wine's cmd.exe, X: mapped to the extracted tree.

WinPE's tools are stand-ins first on PATH (WINEPATH): small logging .exe files (a .cmd stand-in would never return:
a batch file started without ``call`` replaces the calling one). D: is a Linux folder holding a repository at the
build's ``--repository`` path, so the menu's "list images" shows the image captured under Wine.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import wine_env
from wine_env import WinePrefix, winpath

from builder.config import RuntimeConfig
from builder.render import render_overlay_files
from tests.wine.conftest import DRIVER_SUBDIR, IMAGE_NAME, LOCALE, REPOSITORY, MiB, copy_tree, replace_file

pytestmark = pytest.mark.wine

STARTNET = "X:\\Windows\\System32\\startnet.cmd"
LAUNCHER = "X:\\rescuekit\\launch.cmd"
POWER_PLAN = "8c5e7fda-e8bf-4a96-9a85-a6e23a8c635c"
EXITED = "rescuekit has exited. Run X:\\rescuekit\\launch.cmd to start it again."
DEVICE_ERROR = "rescuekit: error: cannot get the size of \\\\.\\PhysicalDrive0"  # Wine: no disk IOCTLs


@pytest.fixture(scope="session")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wine_env.make_stub_dir(tmp_path_factory.mktemp("wpe-stubs"))


class Boot:
    """A hard-linked copy of the X: tree mapped to X:, a D: folder, the stand-ins' log."""

    def __init__(self, prefix: WinePrefix, tree: Path, d_drive: Path, stubs: Path, log: Path) -> None:
        self.prefix, self.tree, self.d_drive, self.stubs, self.log = prefix, tree, d_drive, stubs, log

    def cmd(self, *args: str, input: str = "") -> subprocess.CompletedProcess:
        env = {"WINEPATH": winpath(self.stubs), "RESCUEKIT_STUB_LOG": winpath(self.log)}
        return self.prefix.run(["cmd.exe", *args], input=input, env=env, cwd=self.d_drive)

    def stub_calls(self) -> list[tuple[str, ...]]:
        """(tool, argv...) per stand-in run, checking that it was our stand-in that ran."""
        if not self.log.exists():
            return []
        calls = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            exe, *argv = line.split("\t")
            assert exe.lower().startswith(winpath(self.stubs).lower() + "\\"), exe
            calls.append((Path(exe.replace("\\", "/")).stem.lower(), *argv))
        return calls

    def set_config(self, cfg: RuntimeConfig) -> None:
        """launch.cmd and config.toml as `rescuekit build` renders them for ``cfg``."""
        files = render_overlay_files(cfg, [])
        for rel in ("rescuekit/launch.cmd", "rescuekit/config.toml"):
            replace_file(self.tree / rel, files[rel].encode())


@pytest.fixture
def boot(wine_prefix: WinePrefix, x_tree: Path, stubs: Path, tmp_path: Path) -> Boot:
    tree = copy_tree(x_tree, tmp_path / "X")
    d_drive = tmp_path / "D"
    d_drive.mkdir()
    wine_prefix.map_drive("x", tree)
    wine_prefix.map_drive("d", d_drive)
    return Boot(wine_prefix, tree, d_drive, stubs, tmp_path / "stubs.log")


def with_repository(boot: Boot, wine_repo: dict) -> None:
    assert REPOSITORY.startswith("D:\\")
    shutil.copytree(wine_repo["path"], boot.d_drive / REPOSITORY[3:])


def test_startnet_runs_the_boot_chain_then_the_menu_with_the_builds_config(boot: Boot, wine_repo: dict):
    with_repository(boot, wine_repo)
    # WinPE: cmd.exe /k startnet.cmd; menu: restore, repository 1, image 1, no disk (message), back, exit
    res = boot.cmd("/k", STARTNET, input="1\n1\n1\n\n0\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert boot.stub_calls() == [
        ("wpeinit",),
        ("powercfg", "/s", POWER_PLAN),
        ("wpeutil", "InitializeNetwork"),
        ("wpeutil", "SetUserLocale", LOCALE),
        ("drvload", f"X:\\rescuekit\\drivers\\1\\{DRIVER_SUBDIR}\\nic card.inf"),  # one argument, spaces and all
        ("drvload", "X:\\rescuekit\\drivers\\1\\e1000.inf"),
    ]
    out = res.stdout
    assert f"Repository {REPOSITORY}" in out  # config.toml's repository found and opened
    assert f"#1 {IMAGE_NAME}" in out and wine_repo["capture"]["id"][:8] in out  # the image picker
    assert "Intel RST / VMD" in out  # Wine shows no physical disk: the no-internal-disk screen says why
    assert list((boot.d_drive / REPOSITORY[3:] / "logs").glob("rescuekit-*.log"))  # the session log, copied
    assert EXITED in out and "dropping to the command prompt" not in out
    assert out.rstrip().endswith(">"), out  # the prompt is still there afterwards (end of input closes it)
    assert "Traceback" not in res.stderr, res.stderr
    assert (boot.tree / "rescuekit" / "temp").is_dir() and (boot.tree / "rescuekit" / "appdata").is_dir()


@pytest.mark.parametrize("keys", ["0\n", ""], ids=["quit-key", "end-of-input"])
def test_launcher_menu_starts_and_exits_cleanly(boot: Boot, keys: str):
    res = boot.cmd("/c", LAUNCHER, input=keys)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Main menu" in res.stdout and "Esc or 0: exit to the prompt" in res.stdout
    assert "Restore a Windows system image backup" in res.stdout and "Browse files in an image" in res.stdout
    assert "dropping to the command prompt" not in res.stdout and res.stderr == "", res.stderr
    assert boot.stub_calls() == []


BROKEN = {
    # a runtime copy without the menu module
    "module-missing": ("rescuekit/lib/rescuekit/menu.py", None, 2, "No such command 'menu'"),
    # a damaged runtime module
    "module-damaged": ("rescuekit/lib/rescuekit/config.py", b"def settings(:\n", 1, "SyntaxError"),
    # python.exe cannot start at all: STATUS_DLL_NOT_FOUND, a negative exit code
    "dll-missing": ("rescuekit/python/python313.dll", None, -1073741515, ""),
    # the build's config file is damaged: a one-line error, not a traceback
    "config-damaged": ("rescuekit/config.toml", b"[rescuekit\n", 1, "rescuekit: error: bad config file"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_failing_runtime_drops_to_the_prompt_with_its_exit_code(boot: Boot, case: str):
    rel, data, code, err = BROKEN[case]
    replace_file(boot.tree / rel, data)
    res = boot.cmd("/k", LAUNCHER, input="echo PROMPT rc=%RESCUEKIT_RC%\n")
    assert f"rescuekit exited with code {code}; dropping to the command prompt." in res.stdout, res.stdout
    assert f"PROMPT rc={code}" in res.stdout, res.stdout  # the prompt runs the next command
    assert err in res.stderr, res.stderr
    if case == "config-damaged":
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_default_actions_get_the_builds_values_intact(boot: Boot, wine_repo: dict):
    """capture/restore launch lines: the quoted repository and image name arrive as single arguments."""
    restore = RuntimeConfig(default_action="restore", repository=REPOSITORY, target="\\\\.\\PhysicalDrive0",
                            image=IMAGE_NAME)
    boot.set_config(restore)
    res = boot.cmd("/c", LAUNCHER)
    assert res.stderr.strip() == f"rescuekit: error: repository {REPOSITORY} does not exist", res.stderr
    assert "rescuekit exited with code 1; dropping to the command prompt." in res.stdout
    with_repository(boot, wine_repo)
    res = boot.cmd("/c", LAUNCHER)
    # the repository opened and the image was found by its name; then Wine cannot size a physical disk
    assert res.stderr.strip().startswith(DEVICE_ERROR), res.stderr
    boot.set_config(RuntimeConfig(default_action="capture", repository=REPOSITORY + "\\new",
                                  target="\\\\.\\PhysicalDrive0", image=IMAGE_NAME))
    res = boot.cmd("/c", LAUNCHER)
    assert res.stderr.strip().startswith(DEVICE_ERROR), res.stderr
    assert "dropping to the command prompt" in res.stdout
    assert not (boot.d_drive / REPOSITORY[3:] / "new").exists()  # nothing made before the source opened


def test_unattended_auto_target_refuses_when_no_disk_fits_and_logs_the_machine(boot: Boot, wine_repo: dict):
    """--target auto: the launcher runs the menu unattended; Wine shows no disk, so it refuses and logs why."""
    with_repository(boot, wine_repo)
    boot.set_config(RuntimeConfig(default_action="restore", repository=REPOSITORY, target="auto", image=IMAGE_NAME,
                                  then="menu"))
    assert "-m rescuekit menu" in (boot.tree / "rescuekit" / "launch.cmd").read_text()
    res = boot.cmd("/c", LAUNCHER)
    assert "rescuekit exited with code 1; dropping to the command prompt." in res.stdout, res.stdout + res.stderr
    assert "--target auto needs exactly one internal disk" in res.stderr and "found 0" in res.stderr, res.stderr
    line = (boot.d_drive / REPOSITORY[3:] / "logs" / "machines.log").read_text().splitlines()
    assert len(line) == 1 and line[0].split("\t")[2:] == ["auto", "-", wine_repo["capture"]["id"], IMAGE_NAME,
                                                            "refused"], line


HOSTILE = [
    ("--repository", 'D:\\say "hi"', '"'),
    ("--repository", "D:\\100%done", "%"),
    ("--repository", "D:\\a^b", "^"),
    ("--repository", "D:\\a & b", "&"),
    ("--repository", "D:\\bang!", "!"),
    ("--repository", "D:\\B\u00fcro", "only ASCII"),
    ("--image-name", "pc&1", "A-Z"),
    ("--locale", "en-US & x", "locale"),
]


@pytest.mark.parametrize("option,value,why", HOSTILE)
def test_hostile_config_values_are_refused_at_build_time(wine_iso: Path, tmp_path: Path, option: str, value: str,
                                                         why: str):
    out = tmp_path / "x.iso"
    res = subprocess.run([sys.executable, "-c", "from builder.cli import main; main()", "build", "--source",
                          str(wine_iso.parent / "standin"), "--output", str(out), "--no-prompt", option, value],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rescuekit: error: invalid {option} ") and why in lines[0], lines
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_label_repository_is_found_among_the_drive_letters(boot: Boot, runtime: wine_env.Runtime, wine_repo: dict,
                                                          gpt_disk, tmp_path: Path):
    r"""``RKREPO:\images`` under Wine: R: is labelled "rkrepo" (Wine reads a drive's label from ``.windows-label``
    in its root), T: is labelled RKREPO too but holds a rescuekit medium (build.json + boot.wim), so only R: counts
    (case-insensitive; the boot medium is never the repository). An unattended-style capture and restore find R:
    and copy their logs to R:\rescuekit-logs\; the build's launch.cmd line with the label resolves it the same way."""
    vols = {"r": tmp_path / "R", "t": tmp_path / "T"}
    for letter, label in (("r", "rkrepo"), ("t", "RKREPO")):
        vols[letter].mkdir()
        (vols[letter] / ".windows-label").write_text(label + "\n")
        boot.prefix.map_drive(letter, vols[letter])
    for rel in ("rescuekit/build.json", "sources/boot.wim"):
        (vols["t"] / rel).parent.mkdir(parents=True, exist_ok=True)
        (vols["t"] / rel).write_bytes(b"{}")
    shutil.copytree(wine_repo["path"], vols["r"] / "images")
    boot.prefix.stop()  # Wine's mount manager lists drive letters it saw at its start
    boot.prefix.start()
    try:
        res = runtime.rk("capture", winpath(gpt_disk[0]), "RKREPO:\\images", "--name", "by-label", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "rescuekit: repository RKREPO:\\images is R:\\images" in res.stderr, res.stderr
        cap = json.loads(res.stdout)
        assert (vols["r"] / "images" / "images").is_dir() and not (vols["t"] / "images").exists()
        target = tmp_path / "target.img"
        with open(target, "wb") as f:
            f.truncate(160 * MiB)
        res = runtime.rk("restore", "RKREPO:\\images", winpath(target), "--image", "by-label", "--yes")
        assert res.returncode == 0 and f"restored image {cap['id']}" in res.stdout, res.stdout + res.stderr
        logs = sorted((vols["r"] / "rescuekit-logs").glob("rescuekit-*.log"))
        texts = [p.read_text() for p in logs]
        assert len(logs) == 2 and any(f"as image {cap['id']}" in t and "capture finished" in t for t in texts) \
            and any(f"restored image {cap['id']}" in t and "restore finished" in t for t in texts), texts
        # the build's launcher with --repository RKREPO:\images: resolved, then Wine cannot open the physical disk
        boot.set_config(RuntimeConfig(default_action="capture", repository="RKREPO:\\images",
                                      target="\\\\.\\PhysicalDrive0", image=IMAGE_NAME))
        res = boot.cmd("/c", LAUNCHER)
        assert "rescuekit: repository RKREPO:\\images is R:\\images" in res.stderr, res.stderr
        assert DEVICE_ERROR in res.stderr and "rescuekit exited with code 1" in res.stdout, res.stdout + res.stderr
        failed = [p for p in (vols["r"] / "rescuekit-logs").glob("rescuekit-*.log") if p not in logs]
        assert len(failed) == 1 and "capture failed: cannot get the size of" in failed[0].read_text()
    finally:
        for letter in vols:
            (boot.prefix.path / "dosdevices" / f"{letter}:").unlink()


def test_console_pages_are_cleared_and_the_typed_confirmation_shows(runtime: wine_env.Runtime, wine_repo: dict,
                                                                    tmp_path: Path):
    """The menu on a real Windows console (Wine's, in an 80x25 tmux): each page replaces the last one (rich only
    homed the cursor on a legacy console, so the ERASE prompt sat among the previous page's characters and the typed
    word did not show as typed), and the typed confirmation is echoed on its own line."""
    from tests.conftest import require_tools
    from tests.tmux_helpers import Tmux

    require_tools("tmux")
    target = tmp_path / "t.img"
    with open(target, "wb") as f:
        f.truncate(160 * MiB)
    env = {k: runtime.prefix.env[k] for k in ("WINEPREFIX", "WINEDEBUG", "WINEARCH", "WINEDLLOVERRIDES")}
    cmd = [runtime.prefix.loader, *runtime._py_args(), "-m", "rescuekit", "menu", "--no-scan",
           winpath(wine_repo["path"]), winpath(target)]
    t = Tmux(f"rk-wine-{tmp_path.name}", cmd, env)
    try:
        t.wait_for("Main menu", "Esc or 0:")
        for page in ("choose the repository", "choose the image", "choose the disk to overwrite"):
            t.keys("Enter")
            t.wait_for(page, "Esc or 0:")
        t.keys("Enter")
        t.wait_for("Type ERASE:")
        t.keys("ERA")
        screen = t.wait_for("Type ERASE: ERA")
        assert [ln for ln in screen.splitlines() if ln.startswith("Type ERASE:")] == ["Type ERASE: ERA"], screen
        assert "Esc or 0" not in screen and "Main menu" not in screen, screen  # nothing left of earlier pages
        t.keys("Enter")  # not the word: cancelled (a lone Esc is held back by Wine's console input parser)
        t.wait_for("cancelled", "Enter or Esc: continue")
        t.keys("Enter")
        t.wait_for("Main menu", "Esc or 0:")
        t.keys("0", "Enter")
        t.wait_for("MENU-EXITED 0")
    finally:
        t.kill()
    with open(target, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)  # cancelled: nothing written
