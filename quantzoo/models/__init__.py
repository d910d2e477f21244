"""The zoo's benchmark models. Each is registered as a :class:`~quantzoo.catalog.ModelDef` that names the
data sets it fits; :func:`quantzoo.bench.data.build_model` builds one by name for a data set."""

from __future__ import annotations

from ..catalog import ModelDef
from .cnn import SmallCNN
from .lenet import LeNet5
from .mlp import MLP
from .mobilenetv2 import MobileNetV2Tiny
from .resnet import ResNetTiny
from .resnet8 import ResNet8
from .sequence import CNN1d, GRU1d
from .transformer import TinyTransformer
from .yolo import TinyYOLO, yolo_decode, yolo_loss

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
    ModelDef("yolo-tiny", TinyYOLO, datasets=("shapes",), loss=yolo_loss, decode=yolo_decode,
             description="single-scale YOLOv3-style detector: Conv-BN-LeakyReLU, Darknet residuals, upsample + "
                         "concat, one-anchor head on a stride-4 grid"),
    ModelDef("mobilenetv2-tiny", MobileNetV2Tiny, datasets=("digits", "mnist1d"), aliases=("mobilenetv2",),
             description="MobileNetV2 (depthwise convs, ReLU6, inverted residuals as functional adds), 1-D or 2-D"),
    ModelDef("resnet8", ResNet8, datasets=("digits", "mnist1d"),
             description="ResNet-8 in torchvision's BasicBlock idiom (shared in-place ReLU, out += identity), "
                         "1-D or 2-D"),
]


__all__ = ["CORE_MODELS", "CNN1d", "GRU1d", "LeNet5", "MLP", "MobileNetV2Tiny", "ResNet8", "ResNetTiny", "SmallCNN",
           "TinyTransformer", "TinyYOLO"]
