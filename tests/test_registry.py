"""The registry: lookup (case-insensitive, aliases, fnmatch, natural sort), unknown-name suggestions, the
contract a plugin's hooks must keep, and meta-tests that keep CONTRIBUTING.md's hook reference complete."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from torch import nn

from quantzoo import (
    Backend,
    DatasetDef,
    DuplicateNameError,
    ModelDef,
    Observer,
    PluginError,
    QuantzooError,
    UnknownNameError,
    hookimpl,
)
from quantzoo import hookspecs
from quantzoo.observers import MinMaxObserver
from quantzoo.quantizers import UniformQuantizer
from quantzoo.registry import (KINDS, PluginInfo, Registry, get_registry, make_plugin_manager, natural_key,
                               reset_registry)

CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def quantizer(name: str, aliases: tuple[str, ...] = ()) -> type:
    return type(f"Q_{name}", (UniformQuantizer,), {"name": name, "aliases": aliases})


def plugin(**hooks):
    """A plugin object whose hooks register the given objects, e.g. ``plugin(register_quantizers=[Q])``."""
    ns = {}
    for hook_name, objs in hooks.items():
        def impl(register, _objs=objs):
            for o in _objs:
                register(o)
        impl.__name__ = hook_name
        ns[hook_name] = staticmethod(hookimpl(impl))
    return type("Plugin", (), ns)


def make_registry(**plugins) -> Registry:
    """The core plus in-memory plugins (no entry points): ``make_registry(name=plugin(...))``."""
    pm, infos = make_plugin_manager(load_entrypoints=False)
    for name, p in plugins.items():
        pm.register(p, name=name)
        pm.check_pending()
        infos.append(PluginInfo(name))
    return Registry(pm, infos)


@pytest.fixture(scope="module")
def reg() -> Registry:
    return make_registry(
        extra=plugin(register_quantizers=[quantizer("dorefa", ("dorefa-net",)), quantizer("w16"),
                                          quantizer("w2"), quantizer("w4"), quantizer("w1.5")]))


# -- lookup ----------------------------------------------------------------------------------------------
def test_lookup_is_case_insensitive(reg):
    assert reg.get("quantizer", "UNIFORM") is reg.get("quantizer", "uniform") is UniformQuantizer
    assert reg.get("observer", "MinMax") is MinMaxObserver


def test_aliases_resolve_to_the_canonical_entry(reg):
    entry = reg.entry("quantizer", "DoReFa-Net")
    assert entry.name == "dorefa" and entry.aliases == ("dorefa-net",) and entry.provider == "extra"
    assert "dorefa-net" not in reg.names("quantizer")  # listings show canonical names only


def test_fnmatch_patterns(reg):
    assert reg.names("quantizer", "w*") == ["w1.5", "w2", "w4", "w16"]
    assert reg.names("quantizer", "W?") == ["w2", "w4"]
    assert reg.names("quantizer", "*ref*") == ["dorefa"]
    assert reg.names("quantizer", "[du]*") == ["dorefa", "uniform"]
    assert reg.names("quantizer", "nothing*") == []
    assert [e.name for e in reg.entries("quantizer", "w1*")] == ["w1.5", "w16"]


def test_natural_sort():
    assert sorted(["w16", "w2", "resnet101", "resnet18", "w4"], key=natural_key) == [
        "resnet18", "resnet101", "w2", "w4", "w16"]


def test_entries_are_grouped_by_kind(reg):
    kinds = [e.kind for e in reg.entries()]
    assert kinds == sorted(kinds, key=KINDS.index)
    assert {"quantizer", "observer", "backend"} <= set(kinds)


def test_unknown_name_suggests_and_lists_installed(reg):
    with pytest.raises(UnknownNameError) as info:
        reg.get("quantizer", "dorefs")
    assert str(info.value) == ("Unknown quantizer 'dorefs'. Did you mean: dorefa? "
                               "Installed: dorefa, uniform, w1.5, w2, w4, w16")
    assert isinstance(info.value, KeyError) and isinstance(info.value, QuantzooError)
    with pytest.raises(UnknownNameError, match=r"^Unknown observer 'zzz'\. Installed: "):
        reg.get("observer", "zzz")  # nothing close: no "Did you mean"


def test_unknown_kind_is_a_clear_error(reg):
    with pytest.raises(ValueError, match="unknown kind 'quantiser'; choose one of quantizer, observer"):
        reg.get("quantiser", "uniform")


def test_get_registry_is_cached_and_reset(fresh_registry):
    first = get_registry()
    assert get_registry() is first
    reset_registry()
    assert get_registry() is not first
    mine = make_registry()
    reset_registry(mine)
    assert get_registry() is mine


# -- the contract of register() --------------------------------------------------------------------------
def test_duplicate_name_names_both_providers():
    with pytest.raises(DuplicateNameError, match=r"'uniform' is provided twice: by plugin 'quantzoo' .* by plugin 'a'"):
        make_registry(a=plugin(register_quantizers=[quantizer("uniform")]))


def test_alias_clashing_with_a_name_is_a_duplicate():
    with pytest.raises(DuplicateNameError, match=r"'uniform'.*'quantzoo'.*'b' \(other\)"):
        make_registry(b=plugin(register_quantizers=[quantizer("other", ("Uniform",))]))


def test_same_name_in_two_kinds_is_allowed():
    reg = make_registry(c=plugin(register_quantizers=[quantizer("minmax")]))
    assert reg.get("quantizer", "minmax").name == "minmax" and reg.get("observer", "minmax") is MinMaxObserver


@pytest.mark.parametrize("name", ["Has Space", "UPPER", "", "-leading", "ünïcode"])
def test_names_must_be_slugs(name):
    with pytest.raises(PluginError, match="lowercase slugs"):
        make_registry(d=plugin(register_quantizers=[quantizer(name)]))


@pytest.mark.parametrize("hook, obj, expected", [
    ("register_quantizers", UniformQuantizer(), "expected a subclass of quantzoo.quantizer.Quantizer"),
    ("register_observers", UniformQuantizer, "expected a subclass of quantzoo.observers.base.Observer"),
    ("register_models", nn.Linear, "expected an instance of quantzoo.catalog.ModelDef"),
])
def test_wrong_type_is_a_plugin_error_naming_the_plugin(hook, obj, expected):
    with pytest.raises(PluginError, match=re.escape(expected)) as info:
        make_registry(e=plugin(**{hook: [obj]}))
    assert "plugin 'e'" in str(info.value)


def test_a_hook_that_raises_marks_its_plugin_broken():
    class Failing:
        @staticmethod
        @hookimpl
        def register_quantizers(register):
            raise ImportError("needs the optional package foo")

    reg = make_registry(failing=Failing, good=plugin(register_quantizers=[quantizer("fine")]))
    info = next(p for p in reg.plugins if p.name == "failing")
    assert info.status == "broken"
    assert info.error == "register_quantizers failed: ImportError: needs the optional package foo"
    assert "fine" in reg.names("quantizer")


def test_misspelled_hook_fails_check_pending():
    class Typo:
        @staticmethod
        @hookimpl
        def register_quantizer(register):
            pass

    import pluggy

    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'register_quantizer'"):
        make_registry(typo=Typo)


# -- every hook works (each kind registered through its hook and found) -------------------------------------
class _Obs(MinMaxObserver):
    name = "test-observer"


class _Backend(Backend):
    name = "test-backend"


HOOK_EXAMPLES = {
    "register_quantizers": quantizer("test-quantizer"),
    "register_observers": _Obs,
    "register_backends": _Backend,
    "register_models": ModelDef("test-model", lambda input_shape, num_classes: nn.Linear(4, num_classes),
                                datasets=("test-dataset",)),
    "register_datasets": DatasetDef("test-dataset", lambda root, seed: None, num_classes=3),
}


@pytest.mark.parametrize("hook", sorted(hookspecs.HOOK_KINDS))
def test_every_hook_registers_its_kind(hook):
    kind = hookspecs.HOOK_KINDS[hook]
    reg = make_registry(p=plugin(**{hook: [HOOK_EXAMPLES[hook]]}))
    entry = reg.entry(kind, f"TEST-{kind}")
    assert entry.obj is HOOK_EXAMPLES[hook] and entry.provider == "p"
    assert next(p for p in reg.plugins if p.name == "p").status == "ok"


# -- meta-tests: the hook reference stays complete --------------------------------------------------------
def _hookspecs():
    return {name: fn for name, fn in vars(hookspecs).items()
            if callable(fn) and hasattr(fn, "quantzoo_spec")}


def test_hookspecs_and_kinds_agree():
    assert set(_hookspecs()) == set(hookspecs.HOOK_KINDS)
    assert set(hookspecs.HOOK_KINDS.values()) == set(KINDS)
    assert set(HOOK_EXAMPLES) == set(_hookspecs())  # every hook has a test above


@pytest.mark.parametrize("name", sorted(hookspecs.HOOK_KINDS))
def test_every_hook_is_documented_in_contributing(name):
    fn = _hookspecs()[name]
    signature = f"{name}{inspect.signature(fn)}"
    text = CONTRIBUTING.read_text(encoding="utf-8")
    assert f"### `{signature}`" in text, f"CONTRIBUTING.md lacks a '### `{signature}`' entry for the hook {name}"
    assert ":param register:" in inspect.getdoc(fn)


def test_observer_and_backend_base_classes_are_exported():
    # the types register() checks are importable from the package root, as CONTRIBUTING.md shows
    assert issubclass(_Obs, Observer) and issubclass(_Backend, Backend)


def test_every_conformance_check_is_documented_in_contributing():
    from quantzoo.testing import ALL_CHECKS

    text = CONTRIBUTING.read_text(encoding="utf-8")
    missing = [c.__name__ for c in ALL_CHECKS if f"`{c.__name__}`" not in text]
    assert not missing, f"CONTRIBUTING.md's check table lacks {missing}"


def test_hook_implementations_may_omit_arguments():
    # pluggy semantics: an implementation declares only the arguments it uses
    calls = []

    class NoArgs:
        @staticmethod
        @hookimpl
        def register_quantizers():
            calls.append(True)

    make_registry(noargs=NoArgs)
    assert calls == [True]


def test_trace_plugins_prints_every_hook_call(monkeypatch, capsys):
    monkeypatch.setenv("QUANTZOO_TRACE_PLUGINS", "1")
    make_registry(t=plugin(register_quantizers=[quantizer("traced")]))
    err = capsys.readouterr().err
    assert "quantzoo trace: register_quantizers() in plugin 't'" in err
    assert "quantzoo trace:   registered quantizer 'traced'" in err
    assert "register_observers() in plugin 'quantzoo'" in err
