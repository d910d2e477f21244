"""The registry commands of the CLI: plugins, list, info, new-plugin, and their one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from quantzoo import hookimpl
from quantzoo.cli import main
from quantzoo.cli.registry_cmds import find_entry
from quantzoo.observers import MinMaxObserver
from quantzoo.quantizers import UniformQuantizer
from quantzoo.registry import KINDS, PluginInfo, Registry, get_registry, make_plugin_manager


@pytest.fixture
def core_only(monkeypatch, fresh_registry):
    """Only the core's components, whatever plugins happen to be installed."""
    monkeypatch.setenv("QUANTZOO_PLUGINS", "")
    monkeypatch.delenv("QUANTZOO_BLOCK_PLUGINS", raising=False)


def run(capsys, *args):
    """``quantzoo ARGS`` in-process through the real entry point: (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ") and "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]


# -- list ------------------------------------------------------------------------------------------------
def test_list_json_has_name_kind_provider(core_only, capsys):
    code, out, err = run(capsys, "list", "--json")
    assert code == 0 and err == ""
    rows = json.loads(out)
    assert {(r["name"], r["kind"], r["provider"]) for r in rows} >= {
        ("uniform", "quantizer", "quantzoo"), ("minmax", "observer", "quantzoo"),
        ("fakequant", "backend", "quantzoo")}
    assert [r["kind"] for r in rows] == sorted((r["kind"] for r in rows), key=KINDS.index)


def test_list_pattern_and_kind(core_only, capsys):
    code, out, _ = run(capsys, "list", "UNIF*", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["uniform"]
    code, out, _ = run(capsys, "list", "--kind", "observer", "--json")
    rows = json.loads(out)
    assert rows and {r["kind"] for r in rows} == {"observer"}
    code, out, _ = run(capsys, "list", "no-such-*", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, err = run(capsys, "list", "no-such-*", "--kind", "backend")
    assert code == 0 and out == "" and err == "No backend names match 'no-such-*'.\n"


def test_list_text(core_only, capsys):
    code, out, _ = run(capsys, "list", "uniform")
    assert code == 0
    assert out.split()[:3] == ["quantizer", "uniform", "quantzoo"]


# -- plugins ---------------------------------------------------------------------------------------------
def test_plugins_json(core_only, capsys):
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0
    [core] = json.loads(out)
    assert core["name"] == "quantzoo" and core["status"] == "ok" and core["error"] is None
    assert core["distribution"] == "quantzoo" and core["version"]
    assert "register_quantizers" in core["hooks"]


# -- info ------------------------------------------------------------------------------------------------
def test_info_quantizer_json(core_only, capsys):
    code, out, _ = run(capsys, "info", "Uniform", "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["name"], info["kind"], info["provider"]) == ("uniform", "quantizer", "quantzoo")
    assert info["paper"] and info["capabilities"]["ptq"] is True
    schema = info["config_schema"]
    assert schema == UniformQuantizer.Config.model_json_schema()
    assert {"weight", "activation", "first_layer", "version"} <= set(schema["properties"])
    assert "W8A8" in info["harness_settings"] and "W1A1" not in info["harness_settings"]


def test_info_text_shows_paper_capabilities_and_schema(core_only, capsys):
    code, out, _ = run(capsys, "info", "uniform")
    assert code == 0
    assert "paper: Krishnamoorthi 2018" in out and "capabilities: ptq=True" in out
    assert "config (JSON Schema):" in out and '"weight_observer"' in out


@pytest.mark.parametrize("kind", KINDS)
def test_info_every_kind(kind, capsys):
    names = get_registry().names(kind)
    if not names:
        pytest.skip(f"no {kind} registered")
    code, out, _ = run(capsys, "info", names[0], "--kind", kind, "--json")
    assert code == 0
    info = json.loads(out)
    assert {"name", "kind", "provider", "config_schema", "description"} <= set(info)
    assert info["kind"] == kind
    assert (info["config_schema"] is not None) == (kind == "quantizer")
    extra = {"observer": "signature", "backend": "available", "model": "datasets", "dataset": "num_classes"}
    assert kind == "quantizer" or extra[kind] in info


def test_info_unknown_name_suggests(core_only, capsys):
    code, _, err = run(capsys, "info", "unifrm")
    assert_one_line_error(code, err, "Unknown quantizer 'unifrm'. Did you mean: uniform? Installed: uniform")
    code, _, err = run(capsys, "info", "minmx")  # closest to an observer: reported as one
    assert_one_line_error(code, err, "Unknown observer 'minmx'. Did you mean: minmax")
    code, _, err = run(capsys, "info", "minmx", "--kind", "backend")
    assert_one_line_error(code, err, "Unknown backend 'minmx'.", "Installed: ")


def test_info_name_in_two_kinds_asks_for_kind():
    class SameName(UniformQuantizer):
        name = "minmax"

    class Plugin:
        @staticmethod
        @hookimpl
        def register_quantizers(register):
            register(SameName)

    pm, infos = make_plugin_manager(load_entrypoints=False)
    pm.register(Plugin, name="same-name")
    reg = Registry(pm, [*infos, PluginInfo("same-name")])
    import click

    with pytest.raises(click.UsageError, match="'minmax' is a quantizer and an observer: pass --kind"):
        find_entry(reg, "minmax", None)
    assert find_entry(reg, "minmax", "observer").obj is MinMaxObserver
    assert find_entry(reg, "minmax", "quantizer").provider == "same-name"


def test_debug_shows_the_exception(core_only, capsys):
    from quantzoo import UnknownNameError

    with pytest.raises(UnknownNameError):
        main(["--debug", "info", "unifrm"])


# -- bad arguments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (("list", "--kind", "quantiser"), "Invalid value for '--kind'"),
    (("bogus",), "No such command 'bogus'"),
    (("info",), "Missing argument 'NAME'"),
    (("list", "--no-such-option"), "No such option"),
    (("new-plugin", "Bad Name"), "plugin name 'Bad Name' is not valid"),
    (("new-plugin", "1abc"), "is not valid"),
])
def test_bad_arguments_exit_2_with_one_line(core_only, capsys, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)  # new-plugin must not write anything on failure
    code, out, err = run(capsys, *args)
    assert_one_line_error(code, err, fragment)
    assert out == "" and list(tmp_path.iterdir()) == []


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "new-plugin" in out and "plugins" in out
    code, out, err = run(capsys)  # bare `quantzoo` shows the help too
    assert code == 0 and out.startswith("Usage: quantzoo") and err == ""


# -- new-plugin ------------------------------------------------------------------------------------------
def test_new_plugin_writes_the_template(capsys, tmp_path):
    code, out, _ = run(capsys, "new-plugin", "my-method", "--dir", str(tmp_path))
    assert code == 0 and "Created" in out
    root = tmp_path / "quantzoo-plugin-my-method"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "quantzoo_plugin_my_method/__init__.py",
                     "tests/test_quantzoo_plugin_my_method.py"]
    text = "".join(p.read_text() for p in root.rglob("*") if p.is_file())
    assert "{{" not in text and "__module__" not in text
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points.quantzoo]\nmy-method = "quantzoo_plugin_my_method"' in pyproject
    assert "class MyMethodQuantizer(Quantizer)" in (root / "quantzoo_plugin_my_method/__init__.py").read_text()
    # never overwrite
    code, _, err = run(capsys, "new-plugin", "my-method", "--dir", str(tmp_path))
    assert_one_line_error(code, err, "already exists")


def test_generated_plugin_installs_lists_and_passes_its_own_tests(tmp_path, capsys, install_plugin_projects):
    """The template is tested by itself: render it, pip-install it into a temporary site directory, find it
    with `quantzoo list`, and run the generated test (conformance kit + a hand-worked value)."""
    code, _, _ = run(capsys, "new-plugin", "tmpl-check", "--dir", str(tmp_path))
    assert code == 0
    root = tmp_path / "quantzoo-plugin-tmpl-check"
    site = tmp_path / "site"
    install_plugin_projects(site, [(root, "quantzoo-plugin-tmpl-check", "quantzoo_plugin_tmpl_check", "tmpl-check")])
    env = {**os.environ, "PYTHONPATH": str(site), "QUANTZOO_PLUGINS": "tmpl-check"}
    env.pop("QUANTZOO_BLOCK_PLUGINS", None)
    listed = subprocess.run(
        [sys.executable, "-c", "from quantzoo.cli import main; main()", "list", "--json", "--kind", "quantizer"],
        env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert {"name": "tmpl-check", "kind": "quantizer", "provider": "tmpl-check"}.items() <= next(
        r for r in json.loads(listed.stdout) if r["name"] == "tmpl-check").items()
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root),
         str(root / "tests")], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "passed" in tests.stdout and "failed" not in tests.stdout


@pytest.mark.parametrize("kind, name", [(e.kind, e.name) for e in get_registry().entries()])
def test_info_works_for_every_registered_component(kind, name):
    """Registry-parametrized: `quantzoo info` describes every installed component as JSON."""
    from quantzoo.cli.registry_cmds import describe_entry

    info = describe_entry(get_registry().entry(kind, name))
    json.dumps(info)
    assert (info["name"], info["kind"]) == (name, kind) and info["provider"]
    assert info["description"], f"{kind} {name!r} has no description; set the class attribute description"
