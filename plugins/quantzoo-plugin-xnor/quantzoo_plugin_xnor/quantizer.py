"""XNOR-Net and BWN: binary weights with per-filter scales, and (XNOR) binary inputs with the K scaling map.

Rastegari, Ordonez, Redmon & Farhadi 2016, "XNOR-Net", arXiv:1603.05279:

* §3.1, eq. 6 (BWN): ``W ≈ α·B``, ``B = sign(W)``, ``α = ‖W‖_ℓ1 / n`` — one α per output filter
  (``BinaryWeight("channel")``). Backward (§3.1): ``∂C/∂W = ∂C/∂W̃ (1/n + ∂sign/∂W·α)`` with
  ``∂sign/∂r = 1_{|r| ≤ 1}``; we differentiate through α and the saturating STE with autograd, which gives
  that gradient (plus the cross terms of α that the paper's element-wise formula leaves out).
* §3.2, eq. 11 (XNOR): ``I ⊛ W ≈ (sign(I) ⊛ sign(W)) ⊙ K·α`` with ``A = Σ|I_{:,:,i}| / c`` (mean absolute
  input over channels) and ``K = A ⊛ k``, ``k`` a ``w×h`` box filter of ``1/(w·h)`` — applied here with the
  conv's own stride, padding and dilation, so K has the output's spatial shape. For Linear layers K is
  ``β = ‖X‖_ℓ1/n`` per input vector (the paper's binary dot product, §3.2).
  :class:`XnorInput` returns ``(sign(I), K)`` and the layer multiplies its output by K
  (:func:`quantzoo.nn.run_layer`). K keeps its autograd gradient (the paper does not say).
* Fig. 3 block order: BN → BinActiv → BinConv → Pool. On the zoo models (``Conv → BN → ReLU → MaxPool``),
  ``replace_relu=True`` turns the ReLUs that feed binary layers into Identity (the sign is the
  nonlinearity; ReLUs after the last binary layer feed only real-valued layers and stay) and the binary activation
  and K sit at the input of the next binarized conv, giving ``… BN → MaxPool → BinActiv+K → BinConv → BN …``;
  max-pooling before the sign equals pooling after it (sign is monotone), so this is the paper's order
  ``BN → BinActiv → BinConv → Pool`` up to where the pool is written. ``input_batchnorm=True`` inserts the
  block's BN at the binary layer's input for models without BN. BWN (``binary_activations=False``) keeps
  the model's ReLUs and float activations.
* First and last layers stay real-valued (the paper's ImageNet setting); ``first_layer``/``last_layer``.

Anchor: micronet's binary weights first subtract the per-filter mean and clamp to [−1, 1]; the paper does
not, and neither do we.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, Quantizer, UnsupportedError
from quantzoo.math import binarize
from quantzoo.nn import BinaryActivation, BinaryWeight, input_batchnorm, replace_relus, swap_layers, to_quant_layer
from quantzoo.policy import LayerPolicy


class XnorInput(BinaryActivation):
    """Binary input ``sign(I)`` (STE cancelled where |I| > 1) and XNOR-Net's scaling map ``K`` (eq. 11)."""

    def __init__(self, layer: nn.Module, norm: nn.Module | None = None):
        super().__init__(norm, clip=1.0)
        if isinstance(layer, nn.Linear):
            self.kind, self.kernel_size = "linear", ()
            self.stride = self.padding = self.dilation = ()
        else:
            self.kind = "conv1d" if isinstance(layer, nn.Conv1d) else "conv2d"
            if isinstance(layer.padding, str):
                raise UnsupportedError(f"xnor: string padding {layer.padding!r} is not supported; use integers")
            self.kernel_size, self.stride = tuple(layer.kernel_size), tuple(layer.stride)
            self.padding, self.dilation = tuple(layer.padding), tuple(layer.dilation)

    def scaling_map(self, a: torch.Tensor) -> torch.Tensor:
        """K: mean |a| over channels, convolved with the 1/(k·k) box filter at the conv's geometry."""
        if self.kind == "linear":
            return a.abs().mean(dim=-1, keepdim=True)                       # β = ‖X‖₁/n
        A = a.abs().mean(dim=1, keepdim=True)                               # A = Σ|I_:,:,i| / c
        numel = 1
        for k in self.kernel_size:
            numel *= k
        box = torch.full((1, 1, *self.kernel_size), 1.0 / numel, dtype=A.dtype, device=A.device)
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(A, box, None, self.stride, self.padding, self.dilation)  # K = A ⊛ k

    def scaled_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.normalized(x)  # once: a BN in training mode must see each batch once
        return binarize(a, self.clip), self.scaling_map(a)

    def extra_repr(self) -> str:
        return f"{self.kind}, kernel={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class XnorConfig(LayerPolicyConfig):
    """XNOR-Net (binary weights and inputs) or BWN (binary weights, ``binary_activations=False``)."""

    binary_activations: bool = Field(True, description="True: XNOR-Net (sign inputs + K); False: BWN")
    replace_relu: bool = Field(True, description="with binary activations: nn.ReLU → nn.Identity")
    input_batchnorm: bool = Field(False, description="insert the block's BN before each binary activation")
    first_layer: LayerPolicy = "fp"
    last_layer: LayerPolicy = "fp"


class XnorQuantizer(Quantizer):
    """BWN / XNOR-Net: α·sign(W) per output filter; XNOR adds sign inputs scaled by the K map."""

    name = "xnor"
    family = "binary"
    paper = "Rastegari et al. 2016, XNOR-Net, arXiv:1603.05279"
    description = "BWN (α·sign(W), α per filter) and XNOR-Net (binary inputs with the K scaling map); 1-bit packed."
    aliases = ("xnor-net",)
    Config = XnorConfig
    decomposes_attention = True  # attention projections quantized like every other Linear
    capabilities = Capabilities(qat=True, weight_bits=(1,), activation_bits=(1, None), needs_training=True)
    default_backend = "packed"

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(binary_activations=a_bits == 1)

    @classmethod
    def bits_of_config(cls, config):
        return 1, (1 if config.binary_activations else None)  # XNOR-Net, or BWN with float activations

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config

        def binary_layer(name, mod):
            act = None
            if cfg.binary_activations:
                act = XnorInput(mod, input_batchnorm(mod) if cfg.input_batchnorm else None)
            return to_quant_layer(mod, weight_quantizer=BinaryWeight("channel", clip=1.0, scale_grad=True),
                                  input_quantizer=act)

        done = swap_layers(model, plan.method_layers(), binary_layer)
        if cfg.binary_activations and cfg.replace_relu:
            replace_relus(model, plan.modules_feeding(done))
        return model
