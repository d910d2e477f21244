"""Shared test set-up: one CPU thread (the machine is shared) and a registry that tests can rebuild."""

from __future__ import annotations

import pytest
import torch

from quantzoo.registry import reset_registry

torch.set_num_threads(1)


@pytest.fixture
def fresh_registry():
    """Drop the cached registry before and after the test (e.g. after it changed QUANTZOO_* variables or
    sys.path); ``quantzoo.get_registry()`` inside the test builds a new one."""
    reset_registry()
    yield
    reset_registry()


@pytest.fixture(scope="session")
def build_plugins():
    """A function ``build(root, {dist_suffix: module_source}) -> site_dir`` that writes one real plugin
    project per entry (pyproject with the ``quantzoo`` entry point, one module) under ``root/src`` and
    installs them all with pip (``--target root/site``, no deps, no network). Put ``site_dir`` on
    ``sys.path``/``PYTHONPATH`` and importlib.metadata discovers their entry points."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    def build(root: Path, plugins: dict[str, str]) -> Path:
        projects = []
        for name, source in plugins.items():
            module = "quantzoo_plugin_" + name.replace("-", "_")
            project = Path(root) / "src" / f"quantzoo-plugin-{name}"
            (project / module).mkdir(parents=True)
            (project / "pyproject.toml").write_text(textwrap.dedent(f"""\
                [build-system]
                requires = ["setuptools>=69"]
                build-backend = "setuptools.build_meta"

                [project]
                name = "quantzoo-plugin-{name}"
                version = "0.1.0"
                dependencies = ["quantzoo"]

                [project.entry-points.quantzoo]
                {name} = "{module}"

                [tool.setuptools]
                packages = ["{module}"]
                """))
            (project / module / "__init__.py").write_text(textwrap.dedent(source))
            projects.append(str(project))
        site = Path(root) / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(site), *projects], check=True, capture_output=True)
        return site

    return build
