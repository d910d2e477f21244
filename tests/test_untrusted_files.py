"""Untrusted files never run code and are never used unverified (issue 8).

Already in the harness's tests (not repeated): a flipped byte in a cached baseline is caught by its sha256 and
recomputed (tests/test_bench_protocol.py::test_corrupt_cache_entry_is_recomputed); a raw pickle with a
matching sha256 is refused by ``BaselineCache.load`` (::test_malicious_pickle_in_cache_is_refused_not_executed);
``quantzoo quantize --out`` files load with ``torch.load(weights_only=True)``
(tests/test_bench_cli.py::test_quantize_command_saves_a_loadable_model).

Here: the malicious entry is a real torch checkpoint (zip format) whose payload is shown to be live (a plain
``torch.load(weights_only=False)`` of a copy does create the marker file); planted in the cache it is refused
and recomputed, through ``get_baseline`` and end to end through ``quantzoo bench``, and the marker never
appears. Every other way an entry can be bad (hash mismatch, damaged archive with a matching hash, non-tensor
content, tensors of the wrong shapes, unreadable record) leads to a recompute, never to its use. The other load
paths (packed models, Distiller stats YAML, method config files) refuse code too, and a static audit of
quantzoo/ and plugins/ finds no unsafe deserialiser.
"""

from __future__ import annotations

import ast
import io
import json
import warnings
from pathlib import Path

import pytest
import torch

from quantzoo.bench.cache import BaselineCache, sha256_bytes
from quantzoo.bench.data import get_baseline
from quantzoo.errors import QuantzooError, QuantzooWarning

FAST = {"epochs": 2, "lr": 3e-3}  # the tiny suite's FP recipe (quantzoo.bench.testing.TINY_SUITE)
ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this calls ``Path(marker).touch()``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def malicious_checkpoint(marker: Path) -> bytes:
    """A genuine ``torch.save`` archive (zip, like a real checkpoint) whose pickle runs code on load."""
    buf = io.BytesIO()
    torch.save({"0.weight": torch.zeros(2, 2), "evil": Payload(marker)}, buf)
    return buf.getvalue()


def _plant(cache: Path, key: str, data: bytes, *, fix_hash: bool = True) -> None:
    """Replace the entry's .pt; with ``fix_hash`` the attacker also rewrites the recorded sha256."""
    c = BaselineCache(cache)
    pt, meta = c.paths(key)
    pt.write_bytes(data)
    if fix_hash:
        record = json.loads(meta.read_text())
        record["sha256"] = sha256_bytes(data)
        meta.write_text(json.dumps(record))


@pytest.fixture
def cache(tmp_path):
    d = tmp_path / "cache"
    get_baseline("mlp", "digits", 0, FAST, cache_dir=d)  # trains once (~1 s) and writes a verified entry
    return d


def _key(cache) -> str:
    return get_baseline("mlp", "digits", 0, FAST, cache_dir=cache).key


def _recomputed(cache, match: str):
    """get_baseline after tampering: a warning that says why, a fresh training, a verified entry again."""
    with pytest.warns(QuantzooWarning, match=match):
        b = get_baseline("mlp", "digits", 0, FAST, cache_dir=cache)
    assert not b.cached  # recomputed, not used
    again = get_baseline("mlp", "digits", 0, FAST, cache_dir=cache)
    assert again.cached and again.accuracy == b.accuracy  # the entry was rewritten and verifies
    pt, meta = BaselineCache(cache).paths(b.key)
    assert json.loads(meta.read_text())["sha256"] == sha256_bytes(pt.read_bytes())
    return b


def test_the_payload_is_live(tmp_path):
    """The test below would fail if the cache unpickled freely: the same bytes, loaded unsafely, run code."""
    marker = tmp_path / "ran"
    torch.load(io.BytesIO(malicious_checkpoint(marker)), weights_only=False)
    assert marker.exists()


def test_malicious_checkpoint_in_cache_is_refused_and_recomputed(cache, tmp_path):
    marker = tmp_path / "PWNED"
    _plant(cache, _key(cache), malicious_checkpoint(marker), fix_hash=True)
    _recomputed(cache, "weights_only")
    assert not marker.exists()


def test_malicious_checkpoint_with_a_stale_hash_is_never_unpickled(cache, tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    _plant(cache, _key(cache), malicious_checkpoint(marker), fix_hash=False)
    loads = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(1) or real(*a, **k))
    _recomputed(cache, "sha256 does not match")
    assert not marker.exists()
    assert loads.count(1) == 1  # only the freshly written entry was deserialised, never the planted one


def _state_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


BAD_ENTRIES = {
    # damaged archive, hash recomputed to match: torch.load itself must fail safely
    "truncated-archive": (lambda good: good[: len(good) // 2], "weights_only"),
    # loads under weights_only, but is not a state dict of tensors
    "not-tensors": (lambda good: _state_bytes({"0.weight": 3, "note": "hello"}), "not a state_dict of tensors"),
    "a-list": (lambda good: _state_bytes([torch.zeros(1)]), "not a state_dict of tensors"),
    # tensors, but not this model's
    "wrong-shapes": (lambda good: _state_bytes({"0.weight": torch.zeros(3, 3)}), "does not fit the model"),
    "empty-file": (lambda good: b"", "weights_only"),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES), ids=list(BAD_ENTRIES))
def test_bad_entry_with_a_matching_hash_is_recomputed(cache, case):
    make, match = BAD_ENTRIES[case]
    key = _key(cache)
    pt, _ = BaselineCache(cache).paths(key)
    _plant(cache, key, make(pt.read_bytes()), fix_hash=True)
    _recomputed(cache, match)


@pytest.mark.parametrize("record", ["{not json", "[1, 2]", '{"accuracy": 99.0}'],
                         ids=["not-json", "not-a-mapping", "no-hash"])
def test_unreadable_or_unhashed_record_is_recomputed(cache, record):
    _, meta = BaselineCache(cache).paths(_key(cache))
    meta.write_text(record)
    _recomputed(cache, "unreadable|sha256")


def test_bench_end_to_end_refuses_a_planted_checkpoint(tmp_path, monkeypatch):
    """`quantzoo bench` with a poisoned baseline cache: the cell runs on a recomputed baseline, no code runs."""
    from click.testing import CliRunner

    from quantzoo.bench.testing import write_suite
    from quantzoo.cli import main

    cache = tmp_path / "cache"
    key = get_baseline("mlp", "digits", 0, FAST, cache_dir=cache).key  # the key the suite's FP cell uses
    marker = tmp_path / "PWNED"
    _plant(cache, key, malicious_checkpoint(marker), fix_hash=True)
    suite = write_suite(tmp_path, bits=("W8A8",))
    with CliRunner().isolation() as (out, err, _), warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            main(["bench", "--suite", str(suite), "--db", str(tmp_path / "r.sqlite"), "--cache-dir", str(cache),
                  "--no-progress"])
        except SystemExit as e:
            assert e.code in (0, None), err.getvalue().decode()
        text = err.getvalue().decode()
    assert "ran 2 (2 ok, 0 failed)" in text, text
    assert not marker.exists()
    pt, _ = BaselineCache(cache).paths(key)
    state = torch.load(pt, weights_only=True)
    assert "evil" not in state and all(isinstance(v, torch.Tensor) for v in state.values())


# -- other load paths ---------------------------------------------------------------------------------------
def test_packed_model_file_refuses_code(tmp_path):
    from quantzoo.nn.packed import load_packed

    marker = tmp_path / "PWNED"
    path = tmp_path / "model.pt"
    path.write_bytes(malicious_checkpoint(marker))
    with pytest.raises(Exception, match="[Ww]eights only|weights_only"):
        load_packed(torch.nn.Linear(2, 2), path)
    assert not marker.exists()


def test_distiller_stats_yaml_refuses_python_tags(tmp_path):
    stats = pytest.importorskip("quantzoo_plugin_distiller.stats")
    marker = tmp_path / "PWNED"
    path = tmp_path / "acts_quantization_stats.yaml"
    path.write_text(f"fc: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]\n")
    with pytest.raises(QuantzooError, match="acts_quantization_stats.yaml"):
        stats.load_stats(path)
    assert not marker.exists()


@pytest.mark.parametrize("ext", [".yaml", ".json", ".toml"])
def test_method_config_files_cannot_carry_code(tmp_path, ext):
    from quantzoo.bench.configs import load_method_config

    marker = tmp_path / "PWNED"
    text = {".yaml": f"weight: !!python/object/apply:os.system ['touch {marker}']\n",
            ".json": '{"__reduce__": ["os.system", ["touch PWNED"]], "weight": {"bits": 4}}',
            ".toml": 'weight = { bits = 4 }\n__class__ = "os.system"\n'}[ext]
    path = tmp_path / f"c{ext}"
    path.write_text(text)
    with pytest.raises(QuantzooError):
        load_method_config(path, "uniform")
    assert not marker.exists() and not (Path.cwd() / "PWNED").exists()


# -- static audit: no unsafe deserialiser anywhere in the library or the plugins ------------------------------
UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"), ("dill", "load"),
    ("dill", "loads"), ("marshal", "loads"), ("marshal", "load"), ("yaml", "load"), ("yaml", "unsafe_load"),
    ("yaml", "full_load"), ("yaml", "load_all"), ("yaml", "unsafe_load_all"), ("joblib", "load"),
    ("shelve", "open"), ("jit", "load"), ("package", "PackageImporter"),
}


def _library_files() -> list[Path]:
    files = sorted((ROOT / "quantzoo").rglob("*.py"))
    for plugin in sorted((ROOT / "plugins").glob("quantzoo-plugin-*")):
        files += sorted(p for p in plugin.rglob("*.py") if "tests" not in p.relative_to(plugin).parts)
    return files


def _audit(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        owner = f.value.attr if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute) else \
            f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        where = f"{path.relative_to(root)}:{node.lineno}"
        if (owner, name) in UNSAFE_CALLS or name in ("eval", "exec") and isinstance(f, ast.Name):
            problems.append(f"{where}: {owner}.{name}")
        if (owner, name) == ("torch", "load"):
            kw = {k.arg: k.value for k in node.keywords}
            if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
        if name == "load" and owner in ("np", "numpy"):
            kw = {k.arg: k.value for k in node.keywords}
            if isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value:
                problems.append(f"{where}: numpy.load(allow_pickle=True)")
    return problems


def test_no_unsafe_deserialiser_in_quantzoo_or_plugins():
    files = _library_files()
    assert len(files) > 50  # the library and every plugin were scanned
    problems = [p for f in files for p in _audit(f)]
    assert not problems, problems


def test_the_audit_catches_what_it_looks_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import pickle, torch, yaml\npickle.loads(b'')\ntorch.load('f')\n"
                     "torch.load('f', weights_only=False)\nyaml.load('x')\neval('1')\n"
                     "torch.load('f', weights_only=True)\nyaml.safe_load('x')\n")
    found = _audit(probe, tmp_path)
    assert [f.split(":")[1] for f in found] == ["2", "3", "4", "5", "6"], found
