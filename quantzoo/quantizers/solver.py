"""Layer-wise weight PTQ: `SolverQuantizer`, the base of the methods that compute their quantized weights from
calibration data layer by layer (GPTQ, AWQ, SmoothQuant) instead of letting observers watch one forward pass,
and the prepare/convert steps these methods and the data-free HQQ share."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from ..errors import ConfigError, UnsupportedError
from ..nn.columns import check_matrix_layer
from ..nn.layers import QuantLayerMixin
from ..nn.swap import replace_layers
from ..nn.solved import ScaledInput, SolvedWeight, solving
from ..quantizer import Capabilities, Quantizer
from .settings import check_bits_setting


class SolverQuantizer(Quantizer):
    """A :class:`~quantzoo.Quantizer` whose calibration runs a solver: :meth:`calibrate` keeps the base class's
    checks (NaN/Inf or empty data raise before any work) and its record, then calls :meth:`_solve` with the
    same batches. Subclasses implement ``_prepare`` (layers with :class:`~quantzoo.nn.solved.SolvedWeight` /
    :class:`~quantzoo.nn.solved.ScaledInput` quantizers), ``_solve`` and ``_convert``.
    """

    def calibrate(self, model: nn.Module, batches: Iterable) -> nn.Module:
        batches = list(batches)
        with solving(model):
            super().calibrate(model, batches)
            model._quantzoo_calibrated = False  # until the solver has finished
            was_training = model.training
            model.eval()
            try:
                self._solve(model, batches)
            finally:
                model.train(was_training)
        model._quantzoo_calibrated = True
        return model

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


def prepare_layers(model: nn.Module, method: str, config, make_layer: Callable[[nn.Module, bool], nn.Module],
                   group_size: int | None = None, group_label: str = "group_size") -> list[str]:
    """The ``_prepare`` of a layer-wise weight PTQ method (GPTQ, AWQ, SmoothQuant, HQQ), in place: every Linear/Conv becomes ``make_layer(mod, edge)``
    under the config's ``first_layer``/``last_layer`` policy (``edge``: an ``"int8"`` first or last layer,
    8 bits per row); refuses a model left without a quantized layer, and checks the layers (and that
    ``group_size`` divides every body layer's inputs) before any calibration work. Returns the names."""
    body: list[str] = []

    def make(name, mod, role):
        if role == "body":
            body.append(name)
        return make_layer(mod, role != "body")

    done = replace_layers(model, make, first_layer=config.first_layer, last_layer=config.last_layer)
    if not done:
        raise UnsupportedError(f"{method}: no Linear/Conv layer to quantize (first_layer={config.first_layer!r}, "
                               f"last_layer={config.last_layer!r}); set them to 'int8' or 'same'")
    check_layers(model, done, method)
    check_layers(model, body, method, group_size, group_label)
    return done


class WeightOnlySolver(SolverQuantizer):
    """A weight-only solver (GPTQ, AWQ) whose config has a ``bits`` field: W2..8 with float activations."""

    capabilities = Capabilities(ptq=True, weight_bits=tuple(range(2, 9)), activation_bits=(32,),
                                needs_calibration=True)

    @classmethod
    def config_for_bits(cls, w_bits, a_bits):
        check_bits_setting(cls, w_bits, a_bits)
        return cls.Config(bits=w_bits)
