"""Write the Brevitas reference fixtures beside this file by running the REAL Brevitas on fixed seeded inputs.

Not run by CI (the tests read the committed fixtures). To regenerate, in a throwaway virtual environment
outside the repository (the versions the committed fixtures were made with)::

    python3 -m venv /work/anchors/brevitas-venv
    /work/anchors/brevitas-venv/bin/pip install torch==2.13.0 brevitas==0.13.4 onnx==1.23.2 \\
        onnxruntime==1.32.0 onnxscript==0.7.2 onnxoptimizer==0.4.2 -c constraints.txt
    /work/anchors/brevitas-venv/bin/python plugins/quantzoo-plugin-brevitas/tests/anchors/make_brevitas_refs.py

(``constraints.txt`` pins the CPU build of torch; Brevitas' ONNX export needs onnx and onnxoptimizer.)
It writes ``refs_weights.pt``, ``refs_acts.pt``, ``refs_layers.pt``, ``refs_calibration.pt``,
``refs_flow_data.pt``, ``refs_ptq.pt``, ``refs_qat.pt`` (plain tensors, strings, lists and dicts:
``torch.load(weights_only=True)`` reads them) and ``brevitas_qcdq_<config>.onnx``. The cases themselves are
in ``brevitas_cases.py``, the same code the tests run on the plugin.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
EXPORT_CONFIGS = ("ptq_default", "ptq_w4a4")


def _load_cases():
    spec = importlib.util.spec_from_file_location("brevitas_cases", HERE / "brevitas_cases.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BrevitasLib:
    """The adapter of ``brevitas_cases`` for the real Brevitas."""

    def __init__(self):
        import brevitas.nn
        import brevitas.quant
        from brevitas.core.function_wrapper import CeilSte, RoundSte
        from brevitas.graph.calibrate import bias_correction_mode, calibration_mode
        from brevitas.inject.enum import RestrictValueType, StatsOp
        from brevitas.nn.utils import merge_bn

        self.nn = brevitas.nn
        self._quant = brevitas.quant
        self._enums = {
            "restrict_scaling_type": {"fp": RestrictValueType.FP, "power_of_two": RestrictValueType.POWER_OF_TWO},
            "scaling_stats_op": {"max": StatsOp.MAX, "percentile": StatsOp.PERCENTILE},
            "restrict_value_float_to_int_impl": {"round": RoundSte, "ceil": CeilSte},
        }
        self.calibration_mode = calibration_mode
        self.bias_correction_mode = bias_correction_mode
        self.merge_bn = merge_bn

    def preset(self, name, **settings):
        cls = getattr(self._quant, name)
        if not settings:
            return cls
        return cls.let(**{k: self._enums.get(k, {}).get(v, v) if isinstance(v, str) else v
                          for k, v in settings.items()})

    @staticmethod
    def quant_weight(layer):
        qt = layer.quant_weight()
        return qt.value, qt.scale

    @staticmethod
    def act_quant(module, role):
        proxy = getattr(module, {"act": "act_quant", "input": "input_quant", "output": "output_quant"}[role], None)
        return proxy if proxy is not None and proxy.is_quant_enabled else None

    @staticmethod
    def act_param(proxy):
        return proxy.fused_activation_quant_proxy.tensor_quant.scaling_impl.value

    @staticmethod
    def act_scale(proxy):
        return proxy.scale()

    @staticmethod
    def export_qcdq(model, x) -> bytes:
        from brevitas.export import export_onnx_qcdq

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx_qcdq(model.eval(), args=x, export_path=str(path))
            return _strip(path.read_bytes())


def _strip(onnx_bytes: bytes) -> bytes:
    """The graph without the exporter's per-node metadata (stack traces with local paths) and shape
    annotations: what is left is what runs."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    g = model.graph
    for item in (*g.node, *g.input, *g.output, *g.initializer, g, model):
        del item.metadata_props[:]
        item.doc_string = ""
    del g.value_info[:]
    return model.SerializeToString()


def _float32(tree):
    """The float64 trajectory results stored as float32 (compared to 1e-5 relative)."""
    if isinstance(tree, dict):
        return {k: _float32(v) for k, v in tree.items()}
    if isinstance(tree, torch.Tensor) and tree.dtype == torch.float64:
        return tree.float()
    return tree


def _percentile_k0() -> str:
    """What Brevitas' AbsPercentile does where k = floor(0.01·q·N + 0.5) is 0 (q = 1 on 10 values)."""
    from brevitas.core.stats import AbsPercentile

    try:
        AbsPercentile(high_percentile_q=1.0, stats_reduce_dim=None)(torch.arange(1.0, 11.0))
    except Exception as exc:  # noqa: BLE001 - recording whatever it raises
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import brevitas

    cases = _load_cases()
    lib = BrevitasLib()
    meta = {"brevitas": str(brevitas.__version__), "torch": str(torch.__version__)}
    g = torch.Generator().manual_seed(20240613)

    for kind, names, make, run in (("weights", cases.WEIGHT_CASES, cases.weight_data, cases.run_weight),
                                   ("acts", cases.ACT_CASES, cases.act_data, cases.run_act),
                                   ("layers", cases.LAYER_CASES, cases.layer_data, cases.run_layer)):
        refs = {"meta": meta}
        for name in names:
            d = make(g, name)
            refs[name] = {"data": d, "out": run(lib, d, name)}
        if kind == "acts":
            refs["deviations"] = {"percentile_k0": _percentile_k0()}
        torch.save(refs, HERE / f"refs_{kind}.pt")

    d = cases.small_data(g)
    calib = {"meta": meta, "data": d,
             "no_cap": cases.run_calibration(lib, d, collect_stats_steps=3, bias_correction=True),
             "default_steps": cases.run_calibration(lib, d, collect_stats_steps=300, batches=3)}
    torch.save(calib, HERE / "refs_calibration.pt")

    d = cases.flow_data(g)
    d.update(cases.layer_cnn_data(g))
    torch.save({"meta": meta, "data": d}, HERE / "refs_flow_data.pt")
    ptq = {"meta": meta}
    for name, cfg in cases.PTQ_CONFIGS.items():
        ptq[name], model = cases.run_ptq_mirror(lib, d, cfg)
        if name in EXPORT_CONFIGS:
            (HERE / f"brevitas_qcdq_{name}.onnx").write_bytes(lib.export_qcdq(model, d["x_eval"][:1]))
    torch.save(ptq, HERE / "refs_ptq.pt")
    qat = {"meta": meta, "layer_cnn": cases.run_layer_cnn(lib, d)}
    for name, (cfg, steps) in cases.QAT_CONFIGS.items():
        qat[name] = cases.run_qat_mirror(lib, d, cfg, steps)
    torch.save(_float32(qat), HERE / "refs_qat.pt")
    for p in sorted(HERE.glob("refs_*.pt")) + sorted(HERE.glob("*.onnx")):
        print(f"{p.name}: {p.stat().st_size / 1024:.1f} KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
