"""Layer-wise weight PTQ: `SolverQuantizer`, the base of the methods that compute their quantized weights from
calibration data layer by layer (GPTQ, AWQ, SmoothQuant) instead of letting observers watch one forward pass,
and the prepare/convert steps these methods and the data-free HQQ share."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from ..errors import ConfigError, UnsupportedError
from ..nn.columns import check_matrix_layer
from ..nn.layers import QuantLayerMixin
from ..nn.solved import ScaledInput, SolvedWeight, solving
from ..nn.swap import swap_layers
from ..policy import LayerPlan
from ..quantizer import Capabilities, Quantizer


class SolverQuantizer(Quantizer):
    """A :class:`~quantzoo.Quantizer` whose calibration step runs a solver: one plain pass over the batches (the
    observers of the policy's 8-bit layers and of input quantizers), then :meth:`_solve` with the same batches,
    while the layers still waiting for their solution pass their inputs through. Subclasses implement
    ``_prepare`` (layers with :class:`~quantzoo.nn.solved.SolvedWeight` / :class:`~quantzoo.nn.solved.ScaledInput`
    quantizers) and ``_solve``; the convert step is :func:`bake_layers`.
    """

    def _calibrate(self, model: nn.Module, batches: list) -> None:
        with solving(model):
            super()._calibrate(model, batches)
            self._solve(model, batches)

    def _convert(self, model: nn.Module) -> nn.Module:
        return bake_layers(model)

    def _solve(self, model: nn.Module, batches: list) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def solver_layers(model: nn.Module) -> list[str]:
    """Names of the prepared layers a solver works on (a :class:`SolvedWeight` weight or a
    :class:`ScaledInput` input), in registration (= forward, in the zoo) order."""
    return [n for n, m in model.named_modules()
            if isinstance(m, QuantLayerMixin) and (isinstance(m.weight_quantizer, SolvedWeight)
                                                   or isinstance(m.input_quantizer, ScaledInput))]


def check_layers(model: nn.Module, names: Iterable[str], method: str, group_size: int | None = None,
                 group_label: str = "group_size") -> None:
    """Before any work: every layer unfolds into a matrix product and ``group_size`` divides its inputs."""
    for name in names:
        layer = model.get_submodule(name)
        check_matrix_layer(layer, name)
        cols = layer.weight[0].numel()
        if group_size is not None and cols % group_size:
            raise ConfigError(f"{method}: {group_label}={group_size} does not divide the {cols} inputs (in·kernel) "
                              f"of layer {name!r}: choose a divisor of every layer's inputs, or keep that layer "
                              "out (first_layer/last_layer 'int8' or 'fp')")


def bake_layers(model: nn.Module) -> nn.Module:
    """The convert step: every quantized layer stores its quantized weight (``weight_bits`` set) and records
    the solver's group size as ``weight_group_size``; input quantizers are frozen."""
    for mod in model.modules():
        if isinstance(mod, QuantLayerMixin):
            group = getattr(mod.weight_quantizer, "group_size", None)
            mod.bake()
            if group:
                mod.weight_group_size = group
    return model


def prepare_layers(model: nn.Module, plan: LayerPlan, method: str, make_layer: Callable[[nn.Module], nn.Module],
                   group_size: int | None = None, group_label: str = "group_size") -> list[str]:
    """The ``_prepare`` of a layer-wise weight PTQ method (GPTQ, AWQ, SmoothQuant, HQQ), in place: every layer of
    ``plan.method_layers()`` becomes ``make_layer(mod)``; checks the layers (and that ``group_size`` divides
    their inputs) before any calibration work. Returns the names."""
    done = swap_layers(model, plan.method_layers(), lambda name, mod: make_layer(mod))
    if not done:
        raise UnsupportedError(f"{method}: no Linear/Conv layer to quantize; the layer policy keeps them all")
    check_layers(model, done, method, group_size, group_label)
    return done


class WeightOnlySolver(SolverQuantizer):
    """A weight-only solver (GPTQ, AWQ) whose config has a ``weight_bits`` field: W2..8, float activations."""

    capabilities = Capabilities(ptq=True, weight_bits=tuple(range(2, 9)), activation_bits=(None,),
                                needs_calibration=True)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(weight_bits=w_bits)
