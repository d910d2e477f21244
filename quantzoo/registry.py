"""The plugin manager and the registry of named components built from it.

:func:`make_plugin_manager` is a factory (tests build fresh ones); :func:`get_registry` caches one for the
process. Entry points of the group ``quantzoo`` are loaded one by one, so a plugin that fails to import is
listed as broken and the others still load. Environment switches:

* ``QUANTZOO_PLUGINS=a,b`` loads only those entry points (``QUANTZOO_PLUGINS=`` loads none);
* ``QUANTZOO_BLOCK_PLUGINS=a,b`` skips those;
* ``QUANTZOO_TRACE_PLUGINS=1`` prints every hook call to stderr.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import DuplicateNameError, PluginError, UnknownNameError

ENTRY_POINT_GROUP = "quantzoo"
KINDS = ("quantizer", "observer", "backend", "model", "dataset")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass
class PluginInfo:
    """One plugin as ``quantzoo plugins`` shows it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok" or "broken"
    error: str | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "hooks": self.hooks, "status": self.status, "error": self.error}


@dataclass(frozen=True)
class Entry:
    """A registered component: its kind, canonical name, the object, and the plugin that provided it."""

    kind: str
    name: str
    obj: Any
    provider: str
    aliases: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        doc = getattr(self.obj, "description", "") or inspect.getdoc(self.obj) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


def _csv_env(var: str) -> list[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


def make_plugin_manager(
    *, load_entrypoints: bool = True, only: Iterable[str] | None = None, block: Iterable[str] = ()
) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """A plugin manager with the core's components and the installed plugins, plus their status."""
    from . import builtins

    pm = pluggy.PluginManager("quantzoo")
    pm.add_hookspecs(hookspecs)
    pm.register(builtins, name="quantzoo")
    infos = [PluginInfo("quantzoo", "quantzoo", _version("quantzoo"), _hooks(pm, builtins))]
    if not load_entrypoints:
        return pm, infos
    only = list(only) if only is not None else _csv_env("QUANTZOO_PLUGINS")
    blocked = set(block) | set(_csv_env("QUANTZOO_BLOCK_PLUGINS") or ())
    seen: dict[str, str | None] = {}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else None
        if ep.name in seen:
            if _same_dist(seen[ep.name], dist):  # the same distribution visible twice on sys.path
                continue
            raise DuplicateNameError(
                f"plugin name {ep.name!r} is provided twice: by distribution {seen[ep.name]!r} and by "
                f"distribution {dist!r}; uninstall one of them")
        seen[ep.name] = dist
        if (only is not None and ep.name not in only) or ep.name in blocked:
            continue
        info = PluginInfo(ep.name, dist, ep.dist.version if ep.dist else None)
        infos.append(info)
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
            try:
                pm.check_pending()
            except pluggy.PluginValidationError:
                pm.unregister(name=ep.name)
                raise
            info.hooks = _hooks(pm, module)
        except Exception as exc:  # noqa: BLE001 - a broken plugin never stops the others
            info.status, info.error = "broken", f"{type(exc).__name__}: {exc}"
    # A name asked for but not installed (a typo in QUANTZOO_PLUGINS) is shown, not silently ignored.
    for name in sorted(set(only or ()) - set(seen) - {"quantzoo"}):
        infos.append(PluginInfo(name, status="broken", error=(
            f"QUANTZOO_PLUGINS names {name!r} but no installed plugin has that entry point; "
            f"installed: {', '.join(sorted(seen)) or '(none)'}")))
    return pm, infos


def _same_dist(a: str | None, b: str | None) -> bool:
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower() if n else n  # noqa: E731 - PEP 503 normalisation
    return norm(a) == norm(b)


def _hooks(pm: pluggy.PluginManager, plugin) -> list[str]:
    return sorted(h.name for h in pm.get_hookcallers(plugin) or [])


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def natural_key(name: str) -> list:
    """Sort key that orders ``w2`` before ``w16`` (natural sort, as timm's ``list_models``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class Registry:
    """Named components of every kind, looked up case-insensitively, by alias or by fnmatch pattern."""

    def __init__(self, pm: pluggy.PluginManager, plugins: list[PluginInfo]):
        self.pm = pm
        self.plugins = plugins
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self._aliases: dict[str, dict[str, str]] = {k: {} for k in KINDS}
        infos = {p.name: p for p in plugins}
        # The hooks are called one implementation at a time (so one failure is attributed to its plugin),
        # which bypasses pluggy's own tracing: QUANTZOO_TRACE_PLUGINS is honoured here.
        self._trace = bool(os.environ.get("QUANTZOO_TRACE_PLUGINS"))
        for hook_name, kind in hookspecs.HOOK_KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                if self._trace:
                    sys.stderr.write(f"quantzoo trace: {hook_name}() in plugin {impl.plugin_name!r}\n")
                register = lambda obj, _k=kind, _p=impl.plugin_name: self._register(_k, obj, _p)  # noqa: E731
                # Pass only the arguments the implementation declares (as pluggy does), so that new hook
                # arguments never break existing plugins.
                offered = {"register": register}
                try:
                    impl.function(**{a: offered[a] for a in impl.argnames if a in offered})
                except (DuplicateNameError, PluginError):
                    raise
                except Exception as exc:
                    info = infos.get(impl.plugin_name)
                    if info is None or impl.plugin_name == "quantzoo":
                        raise
                    info.status, info.error = "broken", f"{hook_name} failed: {type(exc).__name__}: {exc}"

    # -- registration ------------------------------------------------------------------------------------
    def _register(self, kind: str, obj: Any, provider: str) -> None:
        _check_type(kind, obj, provider)
        name = str(getattr(obj, "name", "") or "")
        if not _SLUG.match(name):
            raise PluginError(f"plugin {provider!r} registered a {kind} with name {name!r}: names are lowercase "
                              "slugs of letters, digits, '.', '_' and '-'")
        aliases = tuple(a.lower() for a in getattr(obj, "aliases", ()) or ())
        for key in (name, *aliases):
            other = self._owner(kind, key)
            if other is not None:
                raise DuplicateNameError(
                    f"{kind} name {key!r} is provided twice: by plugin {other.provider!r} ({other.name}) and by "
                    f"plugin {provider!r} ({name}); uninstall one or block it with QUANTZOO_BLOCK_PLUGINS"
                )
        self._entries[kind][name] = Entry(kind, name, obj, provider, aliases)
        if self._trace:
            sys.stderr.write(f"quantzoo trace:   registered {kind} {name!r}\n")
        for a in aliases:
            self._aliases[kind][a] = name

    def _owner(self, kind: str, key: str) -> Entry | None:
        if key in self._entries[kind]:
            return self._entries[kind][key]
        target = self._aliases[kind].get(key)
        return self._entries[kind][target] if target else None

    # -- lookup ------------------------------------------------------------------------------------------
    def code_versions(self, kind: str, name: str) -> dict[str, str | None]:
        """The distributions whose code a component runs: ``{"quantzoo": v, "<its plugin's distribution>": v}``
        (a plugin loaded from a bare module, without a distribution, adds nothing)."""
        by_name = {p.name: p for p in self.plugins}  # the first is quantzoo itself (make_plugin_manager)
        out = {"quantzoo": by_name["quantzoo"].version}
        info = by_name.get(self.entry(kind, name).provider)
        if info is not None and info.distribution:
            out[info.distribution] = info.version
        return out

    def entry(self, kind: str, name: str) -> Entry:
        """The entry called ``name`` (case-insensitive, aliases allowed); :class:`UnknownNameError` if none."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        found = self._owner(kind, str(name).lower())
        if found is None:
            raise UnknownNameError(kind, name, self.names(kind))
        return found

    def get(self, kind: str, name: str) -> Any:
        """The registered object (class or descriptor) called ``name``."""
        return self.entry(kind, name).obj

    def names(self, kind: str, pattern: str | None = None) -> list[str]:
        """Canonical names of ``kind`` matching the fnmatch ``pattern``, naturally sorted."""
        names = self._entries[kind]
        pat = pattern.lower() if pattern else None
        return sorted((n for n in names if pat is None or fnmatchcase(n, pat)), key=natural_key)

    def entries(self, kind: str | None = None, pattern: str | None = None) -> list[Entry]:
        """Entries of one kind (or all kinds), filtered by pattern, in kind then natural order."""
        kinds = [kind] if kind else list(KINDS)
        return [self._entries[k][n] for k in kinds for n in self.names(k, pattern)]


def _check_type(kind: str, obj: Any, provider: str) -> None:
    from .backends import Backend
    from .catalog import DatasetDef, ModelDef
    from .observers import Observer
    from .quantizer import Quantizer

    expected = {"quantizer": Quantizer, "observer": Observer, "backend": Backend, "model": ModelDef,
                "dataset": DatasetDef}[kind]
    ok = isinstance(obj, expected) if kind in ("model", "dataset") else (
        inspect.isclass(obj) and issubclass(obj, expected))
    if not ok:
        what = "an instance" if kind in ("model", "dataset") else "a subclass"
        raise PluginError(f"plugin {provider!r} registered {obj!r} as a {kind}; expected {what} of "
                          f"{expected.__module__}.{expected.__qualname__}")


_REGISTRY: Registry | None = None


def build_registry(**kwargs) -> Registry:
    """A fresh registry (``kwargs`` go to :func:`make_plugin_manager`)."""
    pm, infos = make_plugin_manager(**kwargs)
    return Registry(pm, infos)


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def reset_registry(registry: Registry | None = None) -> None:
    """Drop (or replace) the cached registry, e.g. after installing a plugin or in tests."""
    global _REGISTRY
    _REGISTRY = registry
