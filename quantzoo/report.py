"""The quantization report: per layer of a prepared or converted model, what was quantized and what stayed float.

``quantzoo.report(model)`` reads the model itself (its quantizer modules, torch.ao int8 modules, packed
layers), so it describes what will actually run, for every method. A layer with weights that is not
quantized is listed as float with the reason: the layer policy's (``first layer (policy fp)``, an exclude
pattern), a converter's own list (``model._quantzoo_float_layers``), or that the method does not quantize
that kind of layer. ``quantzoo quantize --report`` prints it and warns about every float layer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from torch import nn

from .quantized_weights import _TORCH_QUANTIZED, _torch_quantized_weights

#: Module types that hold weights and are worth a line in the report (the compute of a model).
_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase, nn.MultiheadAttention, nn.Embedding,
             nn.EmbeddingBag)


@dataclass
class LayerReport:
    name: str
    kind: str  # the module's class name
    quantized: bool
    weight: str = ""  # e.g. "int4 sym per_channel(0)", "binary", "int8 (torch.ao)"
    input: str = ""
    output: str = ""
    reason: str = ""  # why it stays float


@dataclass
class Report:
    method: str | None
    layers: list[LayerReport] = field(default_factory=list)

    def float_layers(self) -> dict[str, str]:
        return {lay.name: lay.reason for lay in self.layers if not lay.quantized}

    def as_dict(self) -> dict:
        return {"method": self.method, "layers": [asdict(lay) for lay in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    def to_markdown(self) -> str:
        from tabulate import tabulate

        rows = [[lay.name, lay.kind, "yes" if lay.quantized else "float", lay.weight, lay.input, lay.output,
                 lay.reason] for lay in self.layers]
        return tabulate(rows, headers=["layer", "type", "quantized", "weight", "input", "output", "why float"],
                        tablefmt="pipe")


def _describe(q) -> str:
    """A short label of a tensor quantizer module."""
    if q is None:
        return ""
    spec = getattr(q, "spec", None)
    if spec is not None and hasattr(spec, "describe"):
        return spec.describe()
    bits = getattr(q, "bits", None)
    return f"{type(q).__name__} ({bits} bits)" if bits else type(q).__name__


def _is_quantizer_layer(mod: nn.Module) -> bool:
    return any(hasattr(mod, a) for a in ("weight_quantizer", "input_quantizer", "packed_weight")) or isinstance(
        getattr(mod, "weight_bits", None), int)


def quantization_report(model: nn.Module) -> Report:
    """The report of a prepared or converted model (see the module doc)."""
    method = getattr(model, "_quantzoo_method", None)
    plan = getattr(model, "_quantzoo_plan", None)
    extra = dict(getattr(model, "_quantzoo_float_layers", {}) or {})
    report = Report(method)
    covered: set[str] = set()
    for name, mod in model.named_modules():
        if not name or any(name.startswith(c + ".") for c in covered):
            continue
        kind = type(mod).__name__
        if _is_quantizer_layer(mod):
            bits = getattr(mod, "weight_bits", None)
            weight = (_describe(getattr(mod, "weight_quantizer", None)) or getattr(mod, "weight_format", "")
                      or (f"{bits} bits" if bits else ""))
            report.layers.append(LayerReport(name, kind, True, weight, _describe(getattr(mod, "input_quantizer", None)),
                                             _describe(getattr(mod, "output_quantizer", None))))
            covered.add(name)
        elif type(mod).__module__.startswith(_TORCH_QUANTIZED):
            if _torch_quantized_weights(mod):
                dynamic = ".dynamic" in type(mod).__module__
                report.layers.append(LayerReport(name, kind, True, "int8 (torch.ao)",
                                                 "int8 per batch (dynamic)" if dynamic else "quint8"))
            elif kind == "Quantize":
                report.layers.append(LayerReport(name, kind, True, output="quint8 (model input)"))
            covered.add(name)
        elif isinstance(mod, _WEIGHTED):
            why = extra.get(name) or (plan.reasons.get(name) if plan is not None else None) or (
                f"{method or 'the method'} does not quantize {kind} layers")
            report.layers.append(LayerReport(name, kind, False, reason=why))
            covered.add(name)
        elif isinstance(getattr(mod, "bits", None), int):
            # a quantizer standing on a module output (a ReLU replaced by Distiller's, PACT's or Brevitas' own)
            report.layers.append(LayerReport(name, kind, True, output=_describe(mod)))
            covered.add(name)
    return report
