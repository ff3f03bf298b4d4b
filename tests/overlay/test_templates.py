"""The generated .cmd/.ini/.toml files, checked line by line, with hostile and odd-but-valid values."""
from __future__ import annotations

import tomllib

import pytest

from builder.config import RuntimeConfig, cmd_quote, toml_value
from builder.render import render_overlay_files
from rescuekit import __version__
from rescuekit.errors import UsageError

V = __version__
HEADER = [
    "@echo off",
    f"rem rescuekit {V}: WinPE start script (docs/overlay.md). winpeshl runs it in a command",
    "rem prompt that stays open when it ends; closing that prompt reboots WinPE.",
]
ENV_AND_LAUNCH = [
    "rem WinPE has no user profile and a small writable X: (scratch space).",
    "set PYTHONDONTWRITEBYTECODE=1",
    'set "LOCALAPPDATA=X:\\rescuekit\\appdata"',
    'set "TEMP=X:\\rescuekit\\temp"',
    'set "TMP=X:\\rescuekit\\temp"',
    'if not exist "X:\\rescuekit\\appdata" mkdir "X:\\rescuekit\\appdata"',
    'if not exist "X:\\rescuekit\\temp" mkdir "X:\\rescuekit\\temp"',
    "call X:\\rescuekit\\launch.cmd",
    "echo.",
    "echo rescuekit has exited. Run X:\\rescuekit\\launch.cmd to start it again.",
]
LAUNCH_HEAD = [
    "@echo off",
    f"rem rescuekit {V} launcher: runs the bundled Python, falls back to the prompt on failure.",
    "rem -B: a ._pth file puts Python in isolated mode, which ignores PYTHONDONTWRITEBYTECODE.",
]
LAUNCH_TAIL = [
    "set RESCUEKIT_RC=%ERRORLEVEL%",
    'if "%RESCUEKIT_RC%"=="0" goto :eof',
    "echo.",
    "echo rescuekit exited with code %RESCUEKIT_RC%; dropping to the command prompt.",
]
POWER = "powercfg /s 8c5e7fda-e8bf-4a96-9a85-a6e23a8c635c"


def lines(text: str) -> list[str]:
    """Split CRLF text; every line must end in CRLF (no bare LF)."""
    assert text.endswith("\r\n")
    body = text[:-2].split("\r\n")
    assert not any("\n" in ln or "\r" in ln for ln in body)
    return body


def test_default_menu_startnet_and_launcher():
    files = render_overlay_files(RuntimeConfig(), [])
    assert sorted(files) == ["Windows/System32/startnet.cmd", "rescuekit/config.toml", "rescuekit/launch.cmd"]
    assert lines(files["Windows/System32/startnet.cmd"]) == [*HEADER, "wpeinit", POWER, *ENV_AND_LAUNCH]
    assert lines(files["rescuekit/launch.cmd"]) == [
        *LAUNCH_HEAD, "X:\\rescuekit\\python\\python.exe -B -m rescuekit menu", *LAUNCH_TAIL]


def test_capture_with_network_locale_drivers_and_spaces():
    cfg = RuntimeConfig(default_action="capture", repository="D:\\My Images (new)", target="\\\\.\\PhysicalDrive0",
                        image="office pc 1", locale="de-DE", network=True)
    files = render_overlay_files(cfg, ["X:\\rescuekit\\drivers\\1\\e1000.inf", "X:\\rescuekit\\drivers\\2\\nv me.inf"])
    assert lines(files["Windows/System32/startnet.cmd"]) == [
        *HEADER, "wpeinit", POWER,
        "wpeutil InitializeNetwork",
        "wpeutil SetUserLocale de-DE",
        "drvload X:\\rescuekit\\drivers\\1\\e1000.inf",
        'drvload "X:\\rescuekit\\drivers\\2\\nv me.inf"',
        *ENV_AND_LAUNCH,
    ]
    assert lines(files["rescuekit/launch.cmd"]) == [
        *LAUNCH_HEAD,
        'X:\\rescuekit\\python\\python.exe -B -m rescuekit capture \\\\.\\PhysicalDrive0 "D:\\My Images (new)"'
        ' --name "office pc 1"',
        *LAUNCH_TAIL,
    ]


def test_restore_from_unc_share():
    cfg = RuntimeConfig(default_action="restore", repository="\\\\nas01\\backup$\\pcs", target="\\\\.\\PhysicalDrive1")
    launch = lines(render_overlay_files(cfg, [])["rescuekit/launch.cmd"])
    assert launch[3] == ("X:\\rescuekit\\python\\python.exe -B -m rescuekit restore \\\\nas01\\backup$\\pcs "
                         "\\\\.\\PhysicalDrive1 --image latest")


def test_restore_from_a_volume_label_for_winpe():
    """The WinPE build takes LABEL:\\folder (the runtime finds the drive letter); the build command accepts it."""
    from builder.overlay_cli import options_from

    cfg = RuntimeConfig(default_action="restore", repository="RK REPO:\\images", target="\\\\.\\PhysicalDrive0")
    launch = lines(render_overlay_files(cfg.validated(), [])["rescuekit/launch.cmd"])
    assert launch[3] == ('X:\\rescuekit\\python\\python.exe -B -m rescuekit restore "RK REPO:\\images" '
                         "\\\\.\\PhysicalDrive0 --image latest")
    opts = options_from({"default_action": "capture", "repository": "RKREPO:\\images",
                         "target": "\\\\.\\PhysicalDrive0", "python_embed": None})
    assert opts is not None and opts.config.repository == "RKREPO:\\images"


def test_winpeshl_variant_runs_wpeinit_first_and_a_prompt_last():
    files = render_overlay_files(RuntimeConfig(shell="winpeshl"), [])
    assert lines(files["Windows/System32/winpeshl.ini"]) == [
        "[LaunchApps]",
        "%SYSTEMROOT%\\System32\\wpeinit.exe",
        "%SYSTEMROOT%\\System32\\cmd.exe, /c %SYSTEMROOT%\\System32\\startnet.cmd",
        "%SYSTEMROOT%\\System32\\cmd.exe, /k",
    ]
    # wpeinit already ran from winpeshl.ini: startnet.cmd must not run it twice
    assert lines(files["Windows/System32/startnet.cmd"]) == [*HEADER, POWER, *ENV_AND_LAUNCH]


def test_config_toml_round_trips_with_escaping():
    cfg = RuntimeConfig(default_action="capture", repository="\\\\srv\\share\\it's here", target="\\\\.\\C:",
                        image="a.b_c-d e", locale="sr-Latn-RS", build_time="2026-01-01T00:00:00Z")
    text = render_overlay_files(cfg, [])["rescuekit/config.toml"]
    data = tomllib.loads(text)["rescuekit"]
    assert data == {"default_action": "capture", "repository": "\\\\srv\\share\\it's here", "target": "\\\\.\\C:",
                    "image": "a.b_c-d e", "locale": "sr-Latn-RS", "shell": "startnet", "network": False,
                    "then": "menu", "countdown": 10, "tool_version": V, "build_time": "2026-01-01T00:00:00Z"}


def test_toml_value_escapes_everything():
    nasty = 'a"b\\c\nd\te\x01f\x7f'
    assert tomllib.loads(f"k = {toml_value(nasty)}")["k"] == nasty


HOSTILE = [
    ("repository", "D:\\x & del /q C:\\*", "&"),
    ("repository", "D:\\x|more", "|"),
    ("repository", "D:\\a>b", ">"),
    ("repository", "D:\\a<b", "<"),
    ("repository", "D:\\50^%", "%"),
    ("repository", "D:\\%PATH%", "%"),
    ("repository", "D:\\bang!", "!"),
    ("repository", 'D:\\q"uote', '"'),
    ("repository", "D:\\a\r\ncall evil.cmd", "control characters"),
    ("repository", "D:\\a\nb", "control characters"),
    ("repository", "D:\\a\x00b", "control characters"),
    ("repository", "relative\\path", "drive-letter path"),
    ("repository", "D:\\..\\x", "'..'"),
    ("repository", "D:\\a?b", "?"),
    ("repository", "\\\\server", "UNC"),
    ("repository", "", "empty"),
    ("repository", "D:\\Sicherungen\\B\u00fcro", "only ASCII"),
    ("repository", "\\\\nas\\share\\\u0437\u0430\u043f\u0438\u0441\u044c", "only ASCII"),
    ("image", "-rf", "starting with a letter"),
    ("image", "a;b", "A-Z"),
    ("image", "x" * 65, "1-64"),
    ("image", "pc&1", "A-Z"),
    ("target", "\\\\.\\PhysicalDrive0 & format", "PhysicalDrive"),
    ("target", "C:", "PhysicalDrive"),
    ("locale", "en-US & x", "locale"),
    ("locale", "english", "locale"),
    ("default_action", "wipe", "choose one of"),
    ("shell", "explorer", "choose one of"),
]


@pytest.mark.parametrize("field,value,why", HOSTILE)
def test_hostile_values_are_refused_naming_the_option(field, value, why):
    option = "--" + field.replace("_", "-")
    with pytest.raises(UsageError) as err:
        render_overlay_files(RuntimeConfig(**{field: value}), [])
    msg = str(err.value)
    assert "\n" not in msg and option in msg and why in msg


def test_capture_needs_repository_and_target():
    with pytest.raises(UsageError, match="--default-action capture needs --repository and --target"):
        RuntimeConfig(default_action="capture").validated()


@pytest.mark.parametrize("arg", ['a"b', "50%", "x&y", "a\nb"])
def test_cmd_quote_refuses_what_it_cannot_quote(arg):
    with pytest.raises(UsageError):
        cmd_quote(arg)


def test_cmd_quote_quotes_only_when_needed():
    assert cmd_quote("D:\\Images") == "D:\\Images"
    assert cmd_quote("D:\\My Images") == '"D:\\My Images"'
    assert cmd_quote("a,b") == '"a,b"'


def split_like_msvcrt(line: str) -> list[str]:
    """How python.exe (MSVCRT / CommandLineToArgvW) splits its command line into argv."""
    args, cur, quoted, have, i = [], "", False, False, 0
    while i < len(line):
        c = line[i]
        if c == "\\":
            n = len(line[i:]) - len(line[i:].lstrip("\\"))
            if i + n < len(line) and line[i + n] == '"':
                cur += "\\" * (n // 2)
                if n % 2:
                    cur += '"'
                    i += n + 1
                else:
                    i += n
            else:
                cur += "\\" * n
                i += n
            have = True
            continue
        if c == '"':
            quoted, have = not quoted, True
        elif c in " \t" and not quoted:
            if have:
                args.append(cur)
            cur, have = "", False
        else:
            cur, have = cur + c, True
        i += 1
    if have:
        args.append(cur)
    return args


@pytest.mark.parametrize("repo", ["D:\\My Images\\", "\\\\nas01\\pc backups\\", "D:\\a b\\\\", "D:\\", "D:\\x\\"])
def test_repository_with_trailing_backslash_reaches_the_runtime_intact(repo):
    """A quoted argument ending in a backslash would escape its closing quote and swallow the next arguments."""
    cfg = RuntimeConfig(default_action="capture", repository=repo, target="\\\\.\\PhysicalDrive0", image="pc 1")
    line = lines(render_overlay_files(cfg, [])["rescuekit/launch.cmd"])[3]
    assert split_like_msvcrt(line)[4:] == ["capture", "\\\\.\\PhysicalDrive0", repo, "--name", "pc 1"]
