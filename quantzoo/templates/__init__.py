"""Project templates. ``plugin/`` is what ``quantzoo new-plugin NAME`` renders (see :func:`render_plugin`).

Template files end in ``.tmpl`` (so nothing in them is imported or collected in place); ``__module__`` in a
path and ``{{name}}``, ``{{dist}}``, ``{{module}}``, ``{{class_name}}``, ``{{title}}`` in the text are
replaced when rendering.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError

PLUGIN_TEMPLATE = Path(__file__).parent / "plugin"
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


def plugin_names(name: str) -> dict[str, str]:
    """The names a plugin called ``name`` uses: method, distribution, module, class prefix, title."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"plugin name {name!r} is not valid: use lowercase letters and digits, optionally joined by '-' or "
            "'_', starting with a letter (e.g. 'dorefa' or 'my-method')")
    parts = re.split(r"[-_]", name)
    return {
        "name": name,
        "dist": f"quantzoo-plugin-{name}",
        "module": f"quantzoo_plugin_{name.replace('-', '_')}",
        "class_name": "".join(p.capitalize() for p in parts),
        "title": " ".join(parts),
    }


def render_plugin(name: str, parent: Path | str) -> Path:
    """Write ``parent/quantzoo-plugin-NAME/`` from the plugin template and return its path.

    Raises :class:`ConfigError` for a bad name or when the directory already exists (nothing is overwritten).
    """
    names = plugin_names(name)
    target = Path(parent) / names["dist"]
    if target.exists():
        raise ConfigError(f"{target} already exists: choose another name or remove that directory first")
    for src in sorted(PLUGIN_TEMPLATE.rglob("*.tmpl")):
        rel = src.relative_to(PLUGIN_TEMPLATE).as_posix().removesuffix(".tmpl").replace("__module__", names["module"])
        text = src.read_text(encoding="utf-8")
        for key, value in names.items():
            text = text.replace("{{" + key + "}}", value)
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
    return target
