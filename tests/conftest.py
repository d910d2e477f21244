"""Shared test set-up: one CPU thread (the machine is shared), a registry that tests can rebuild, and
real plugin distributions installed into temporary site directories."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

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


def install_projects(site: Path, projects: list[tuple[Path, str, str, str]]) -> Path:
    """Install plugin projects ``(project_dir, distribution, module, entry_point_name)`` into ``site``.

    With setuptools present this is a real build and install (``pip install --no-deps
    --no-build-isolation --no-index --target site``); without it (e.g. a Python 3.12 venv, which ships no
    setuptools) the same layout is written by hand: the package plus a ``.dist-info`` with METADATA and
    ``entry_points.txt``, which is all importlib.metadata reads to find the entry point.
    """
    site = Path(site)
    if importlib.util.find_spec("setuptools") is not None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(site), *(str(p[0]) for p in projects)],
                       check=True, capture_output=True)
        return site
    for project, dist, module, ep_name in projects:
        shutil.copytree(Path(project) / module, site / module)
        info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[quantzoo]\n{ep_name} = {module}\n")
        (info / "top_level.txt").write_text(f"{module}\n")
    return site


@pytest.fixture(scope="session")
def build_plugins():
    """A function ``build(root, {name: module_source}) -> site_dir`` that writes one real plugin project
    per entry (``quantzoo-plugin-<name>`` with the entry point ``<name>`` in the group ``quantzoo`` and one
    module) under ``root/src`` and installs them into ``root/site`` (see :func:`install_projects`). Put
    ``site_dir`` on ``sys.path``/``PYTHONPATH`` and importlib.metadata discovers their entry points."""

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
            projects.append((project, f"quantzoo-plugin-{name}", module, name))
        return install_projects(Path(root) / "site", projects)

    return build


@pytest.fixture(scope="session")
def install_plugin_projects():
    """:func:`install_projects` as a fixture (test modules import nothing from conftest)."""
    return install_projects
