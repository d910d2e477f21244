"""Real plugin distributions, built and pip-installed into a temporary site directory, found through the
``quantzoo`` entry-point group: a good one loads, a broken one is listed as broken while the others still
load, a duplicate name fails naming both providers, a misspelled hook is caught by ``check_pending``, and the
QUANTZOO_PLUGINS / QUANTZOO_BLOCK_PLUGINS switches select what loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from quantzoo import DuplicateNameError
from quantzoo.registry import build_registry, reset_registry

GOOD = '''
from quantzoo import hookimpl
from quantzoo.quantizers import UniformQuantizer


class QztGood(UniformQuantizer):
    """uniform under another name, so that the conformance kit can check the installed plugin."""

    name = "qzt-good"
    aliases = ("qzt-good-alias",)


@hookimpl
def register_quantizers(register):
    register(QztGood)
'''

BROKEN = '''
raise RuntimeError("qzt-broken cannot import: missing native library libqzt.so")
'''

DUPLICATE = '''
from quantzoo import hookimpl
from quantzoo.quantizers import UniformQuantizer


class QztDup(UniformQuantizer):
    name = "qzt-good"  # clashes with the plugin qzt-good


@hookimpl
def register_quantizers(register):
    register(QztDup)
'''

TYPO = '''
from quantzoo import hookimpl
from quantzoo.quantizers import UniformQuantizer


class QztTypo(UniformQuantizer):
    name = "qzt-typo"


@hookimpl
def register_quantizer(register):  # misspelled: the hook is register_quantizers
    register(QztTypo)
'''

PLUGINS = ["qzt-good", "qzt-broken", "qzt-dup", "qzt-typo"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, build_plugins) -> Path:
    return build_plugins(tmp_path_factory.mktemp("plugins"),
                         {"qzt-good": GOOD, "qzt-broken": BROKEN, "qzt-dup": DUPLICATE, "qzt-typo": TYPO})


@pytest.fixture
def on_path(site, monkeypatch, fresh_registry):
    """The temporary site directory on sys.path; the plugins' modules are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("QUANTZOO_PLUGINS", raising=False)
    monkeypatch.delenv("QUANTZOO_BLOCK_PLUGINS", raising=False)
    yield site
    for mod in [m for m in sys.modules if m.startswith("quantzoo_plugin_qzt_")]:
        del sys.modules[mod]


def _plugin(reg, name):
    return next(p for p in reg.plugins if p.name == name)


def test_installed_plugin_is_found_through_its_entry_point(on_path):
    reg = build_registry(only=["qzt-good"])
    entry = reg.entry("quantizer", "qzt-good")
    assert entry.provider == "qzt-good"
    assert reg.get("quantizer", "QZT-GOOD-ALIAS") is entry.obj
    info = _plugin(reg, "qzt-good")
    assert (info.distribution, info.version, info.status, info.hooks) == (
        "quantzoo-plugin-qzt-good", "0.1.0", "ok", ["register_quantizers"])
    # a benchmark cell's key covers the plugin's release (see test_bench_runner for the key itself)
    assert reg.code_versions("quantizer", "qzt-good") == {"quantzoo": metadata.version("quantzoo"),
                                                          "quantzoo-plugin-qzt-good": "0.1.0"}


def test_installed_plugin_passes_the_conformance_kit(on_path):
    from quantzoo.testing import check_quantizer

    reg = build_registry(only=["qzt-good"])
    reset_registry(reg)  # check_registered looks the class up in the process registry
    check_quantizer(reg.get("quantizer", "qzt-good"))


def test_broken_plugin_is_listed_and_the_others_still_load(on_path):
    reg = build_registry(only=["qzt-good", "qzt-broken"])
    broken = _plugin(reg, "qzt-broken")
    assert broken.status == "broken"
    assert "RuntimeError: qzt-broken cannot import: missing native library" in broken.error
    assert _plugin(reg, "qzt-good").status == "ok"
    assert "qzt-good" in reg.names("quantizer") and "uniform" in reg.names("quantizer")


def test_duplicate_name_fails_naming_both_providers(on_path):
    with pytest.raises(DuplicateNameError) as info:
        build_registry(only=["qzt-good", "qzt-dup"])
    message = str(info.value)
    assert "'qzt-good'" in message and "'qzt-dup'" in message and "QUANTZOO_BLOCK_PLUGINS" in message


def test_misspelled_hook_is_reported_broken_by_check_pending(on_path):
    reg = build_registry(only=["qzt-typo", "qzt-good"])
    typo = _plugin(reg, "qzt-typo")
    assert typo.status == "broken"
    assert "register_quantizer" in typo.error and "unknown hook" in typo.error
    assert "qzt-typo" not in reg.names("quantizer")  # its hook never ran
    assert "qzt-good" in reg.names("quantizer")


def test_env_loads_only_named_plugins(on_path, monkeypatch):
    monkeypatch.setenv("QUANTZOO_PLUGINS", "qzt-good")
    reg = build_registry()
    assert [p.name for p in reg.plugins] == ["quantzoo", "qzt-good"]
    monkeypatch.setenv("QUANTZOO_PLUGINS", "")
    assert [p.name for p in build_registry().plugins] == ["quantzoo"]


def test_env_blocks_a_plugin(on_path, monkeypatch):
    monkeypatch.setenv("QUANTZOO_PLUGINS", "qzt-good,qzt-dup")
    with pytest.raises(DuplicateNameError):
        build_registry()
    monkeypatch.setenv("QUANTZOO_BLOCK_PLUGINS", "qzt-dup")
    reg = build_registry()
    assert "qzt-dup" not in [p.name for p in reg.plugins]
    assert reg.entry("quantizer", "qzt-good").provider == "qzt-good"


def _quantzoo(site: Path, *args: str, plugins: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "QUANTZOO_PLUGINS": plugins}
    env.pop("QUANTZOO_BLOCK_PLUGINS", None)
    script = Path(sys.executable).with_name("quantzoo")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from quantzoo.cli import main; main()"]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=120)


def test_cli_lists_installed_plugin_and_warns_about_broken_one(site):
    proc = _quantzoo(site, "list", "--json", plugins="qzt-good,qzt-broken")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {"name": "qzt-good", "kind": "quantizer", "provider": "qzt-good"}.items() <= next(
        r for r in rows if r["name"] == "qzt-good").items()
    warnings = [line for line in proc.stderr.splitlines() if line]
    assert len(warnings) == 1 and "qzt-broken" in warnings[0] and "broken" in warnings[0]

    proc = _quantzoo(site, "plugins", "--json", plugins="qzt-good,qzt-broken")
    status = {p["name"]: p["status"] for p in json.loads(proc.stdout)}
    assert status == {"quantzoo": "ok", "qzt-good": "ok", "qzt-broken": "broken"}


def test_cli_duplicate_is_a_one_line_error(site):
    proc = _quantzoo(site, "list", plugins="qzt-good,qzt-dup")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "'qzt-good'" in lines[0] and "'qzt-dup'" in lines[0]


def test_env_naming_a_missing_plugin_is_reported(on_path, monkeypatch):
    monkeypatch.setenv("QUANTZOO_PLUGINS", "qzt-good,qzt-godo")
    reg = build_registry()
    missing = _plugin(reg, "qzt-godo")
    assert missing.status == "broken" and "no installed plugin has that entry point" in missing.error
    assert "qzt-good" in missing.error  # the installed names are listed
    assert _plugin(reg, "qzt-good").status == "ok"


def test_hand_written_dist_info_is_discovered_too(tmp_path, build_plugins, monkeypatch, fresh_registry):
    """Without setuptools (a Python 3.12 venv) the fixture writes the dist-info itself; it must work alike."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "setuptools" else real(name, *a))
    site = build_plugins(tmp_path, {"qzt-hand": GOOD.replace('"qzt-good"', '"qzt-hand"')})
    assert not list(site.glob("*.dist-info/RECORD"))  # really the hand-written path
    monkeypatch.syspath_prepend(str(site))
    try:
        reg = build_registry(only=["qzt-hand"])
        assert reg.entry("quantizer", "qzt-hand").provider == "qzt-hand"
        assert _plugin(reg, "qzt-hand").distribution == "quantzoo-plugin-qzt-hand"
    finally:
        sys.modules.pop("quantzoo_plugin_qzt_hand", None)
