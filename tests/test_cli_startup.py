"""`quantzoo list`, `info` and `plugins` read a snapshot of the registry, so they start without importing any
plugin or torch; the snapshot is rebuilt whenever what it was built from changes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from quantzoo import registry
from quantzoo.cli import main
from quantzoo.cli.registry_cmds import describe_entry


def _run(capsys, *args):
    main(list(args))
    return capsys.readouterr()


@pytest.fixture
def snapshot_file(tmp_path, monkeypatch, fresh_registry):
    """A snapshot file of the core's components only (quick to build)."""
    path = tmp_path / "registry.json"
    monkeypatch.setenv(registry.SNAPSHOT_ENV, str(path))
    monkeypatch.setenv("QUANTZOO_PLUGINS", "")
    return path


def test_snapshot_shows_what_the_registry_shows(snapshot_file, capsys):
    commands = [("list",), ("list", "--json"), ("info", "uniform", "--json"), ("info", "minmax"), ("plugins",)]
    first = [_run(capsys, *c) for c in commands]  # no snapshot yet: from the registry, which is then saved
    assert snapshot_file.exists()
    registry.reset_registry()  # a new process: only the snapshot
    assert isinstance(registry.listing_registry(describe_entry), registry.RegistrySnapshot)
    registry.reset_registry()
    assert [_run(capsys, *c) for c in commands] == first


def test_changes_rebuild_the_snapshot(snapshot_file, tmp_path, monkeypatch):
    source = tmp_path / "plugin_module.py"
    source.write_text("x = 1\n")
    monkeypatch.setattr(registry, "_source_files", lambda module: [source])
    before = registry.environment_fingerprint()
    source.write_text("x = 22\n")  # an edited plugin file (editable install: same version)
    assert registry.environment_fingerprint() != before
    monkeypatch.setenv("QUANTZOO_BLOCK_PLUGINS", "torch")
    assert registry.environment_fingerprint() != before
    snapshot_file.write_text(json.dumps({"fingerprint": "stale", "plugins": [], "entries": []}))
    assert isinstance(registry.listing_registry(describe_entry), registry.Registry)  # stale: rebuilt
    assert json.loads(snapshot_file.read_text())["fingerprint"] == registry.environment_fingerprint()


def test_listing_from_the_snapshot_imports_no_torch(tmp_path, monkeypatch, capsys, fresh_registry):
    """A fresh interpreter lists every installed component from the snapshot without importing torch."""
    path = tmp_path / "registry.json"
    env_code = "from quantzoo.registry import environment_fingerprint; print(environment_fingerprint())"
    fingerprint = subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True,
                                 check=True).stdout.strip()  # what the child process will compute
    monkeypatch.setenv(registry.SNAPSHOT_ENV, "0")
    expected = _run(capsys, "list").out
    reg = registry.get_registry()
    entries = [{"kind": e.kind, "name": e.name, "provider": e.provider, "aliases": list(e.aliases),
                "description": e.description, "info": None} for e in reg.entries()]
    path.write_text(json.dumps({"fingerprint": fingerprint, "plugins": [p.as_dict() for p in reg.plugins],
                                "entries": entries}))
    code = ("import sys; from quantzoo.cli import main; main(['list']); "
            "sys.stderr.write('torch imported' if 'torch' in sys.modules else 'no torch')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, registry.SNAPSHOT_ENV: str(path)})
    assert out.returncode == 0 and out.stderr.strip().endswith("no torch"), out.stderr[-2000:]
    assert out.stdout == expected


def test_public_names_are_imported_on_first_use():
    """``import quantzoo`` imports no torch; every name of ``__all__`` resolves, and none is also the name of a
    submodule (importing that submodule would rebind the package attribute: ``quantzoo.report`` must stay the
    function)."""
    import importlib.util

    import quantzoo
    from quantzoo.layer_report import quantization_report

    code = "import sys, quantzoo; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
    assert all(getattr(quantzoo, n) is not None for n in quantzoo.__all__)
    assert quantzoo.report is quantization_report
    assert [n for n in quantzoo._LAZY if importlib.util.find_spec(f"quantzoo.{n}") is not None] == []
