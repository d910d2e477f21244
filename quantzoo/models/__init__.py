"""The zoo's benchmark models. Each is registered as a :class:`~quantzoo.catalog.ModelDef` that names the
data sets it fits; ``build_model(name, dataset)`` builds a fresh float model for a data set."""

from __future__ import annotations

from torch import nn

from ..catalog import ModelDef
from ..errors import UnsupportedError
from .cnn import SmallCNN
from .lenet import LeNet5
from .mlp import MLP
from .mobilenetv2 import MobileNetV2Tiny
from .resnet import ResNetTiny
from .resnet8 import ResNet8
from .sequence import CNN1d, GRU1d
from .transformer import TinyTransformer

CORE_MODELS = [
    ModelDef("mlp", MLP, datasets=("digits", "mnist1d", "mnist"),
             description="MLP 2x256 hidden with BN and ReLU (BNN-paper style, smaller)"),
    ModelDef("lenet5", LeNet5, datasets=("mnist",),
             description="LeNet-5 of TWN/BNN/XNOR: 32C5-MP2-64C5-MP2-512FC-10, BN after each layer"),
    ModelDef("cnn", SmallCNN, datasets=("digits", "mnist"),
             description="3x Conv3x3+BN+ReLU (32-64-64), max-pool, linear classifier"),
    ModelDef("resnet-tiny", ResNetTiny, datasets=("digits", "mnist"), aliases=("resnet",),
             description="ResNet with 3 basic blocks (residual adds, BN); torch.fx traceable"),
    ModelDef("cnn1d", CNN1d, datasets=("mnist1d",),
             description="MNIST-1D CNN: 3x Conv1d(k5, s2)+BN+ReLU, linear classifier (Greydanus 2020 style)"),
    ModelDef("gru1d", GRU1d, datasets=("mnist1d",),
             description="MNIST-1D GRU (hidden 64) + linear classifier"),
    ModelDef("transformer", TinyTransformer, datasets=("digits", "mnist1d", "mnist"),
             description="2-layer pre-LN transformer encoder (attention and FFN as nn.Linear), mean-pooled"),
    ModelDef("mobilenetv2-tiny", MobileNetV2Tiny, datasets=("digits", "mnist1d"), aliases=("mobilenetv2",),
             description="MobileNetV2 (depthwise convs, ReLU6, inverted residuals as functional adds), 1-D or 2-D"),
    ModelDef("resnet8", ResNet8, datasets=("digits", "mnist1d"),
             description="ResNet-8 in torchvision's BasicBlock idiom (shared in-place ReLU, out += identity), 1-D or 2-D"),
]


def build_model(name: str, dataset: str, input_shape: tuple[int, ...] | None = None,
                num_classes: int | None = None) -> nn.Module:
    """A fresh float model ``name`` for ``dataset`` (the model must declare that it fits the data set)."""
    from ..registry import get_registry

    reg = get_registry()
    mdef = reg.get("model", name)
    ddef = reg.get("dataset", dataset)
    if ddef.name not in mdef.datasets:
        raise UnsupportedError(f"model {mdef.name!r} does not fit data set {ddef.name!r}; it fits: "
                               f"{', '.join(mdef.datasets)}")
    return mdef.build(tuple(input_shape or ddef.input_shape), int(num_classes or ddef.num_classes))


__all__ = ["CORE_MODELS", "CNN1d", "GRU1d", "LeNet5", "MLP", "MobileNetV2Tiny", "ResNet8", "ResNetTiny", "SmallCNN",
           "TinyTransformer", "build_model"]
