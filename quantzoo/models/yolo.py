"""``yolo-tiny``: a single-scale YOLOv3-style detector for the ``shapes`` data set, with its loss and decoder.

Layout (Redmon & Farhadi 2018, arXiv:1804.02767, scaled down; 48x48 input, output grid 12x12, stride 4)::

    stem   CBL 3x3/2  1->16        24x24
    down1  CBL 3x3/2 16->32        12x12  --------------------------+
    res1   x + CBL3x3(CBL1x1(x))   12x12  (Darknet residual)          |
    down2  CBL 3x3/2 32->64         6x6                               |
    res2   x + CBL3x3(CBL1x1(x))    6x6                               |
    lateral CBL 1x1 64->32, nearest upsample x2 -> 12x12, concat -----+  (32 + 32 channels)
    fuse   CBL 1x1 64->32, CBL 3x3 32->64
    head   Conv 1x1 64 -> 5 + C    per cell: objectness, tx, ty, tw, th, class logits

CBL = Conv (no bias) + BatchNorm + LeakyReLU(0.1). The residual add and the concat are plain ``+`` and
``torch.cat`` so that torch.fx traces the model (BN folding, FX graph-mode quantization).

Box coding (YOLOv3 eq. 1 with one anchor prior): ``b_x = (c_x + σ(t_x))·s``, ``b_y = (c_y + σ(t_y))·s``,
``b_w = p·e^{t_w}``, ``b_h = p·e^{t_h}`` with stride ``s = 4`` and prior ``p = 16`` px (the middle of the
data set's 10-20 px objects). Each ground-truth box is assigned to the grid cell holding its centre (the
shapes never overlap, so no cell gets two).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.detection import Detections, nms

STRIDE = 4
ANCHOR = 16.0
#: Loss weights: box terms weigh more than objectness/class (YOLOv1's λ_coord = 5, halved for BCE on x, y).
BOX_WEIGHT = 2.0
#: Decoding: candidates below this score are dropped before NMS (COCO-style evaluation keeps low scores).
SCORE_THRESHOLD = 0.01
NMS_IOU = 0.5
MAX_DETECTIONS = 100
MAX_LOG_SIZE = 4.0  # clamp of t_w, t_h before exp: a blown-up quantized output must not overflow to inf


class ConvBNLeaky(nn.Sequential):
    """Conv (no bias) + BatchNorm + LeakyReLU(0.1): Darknet's convolutional unit."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.1))


class DarknetResidual(nn.Module):
    """``x + CBL3x3(CBL1x1(x))`` with half the channels in between (YOLOv3's residual block, linear add)."""

    def __init__(self, c: int):
        super().__init__()
        self.reduce = ConvBNLeaky(c, c // 2, 1)
        self.expand = ConvBNLeaky(c // 2, c, 3)

    def forward(self, x):
        return x + self.expand(self.reduce(x))


class TinyYOLO(nn.Module):
    """Single-scale YOLO-style detector; ``forward`` returns the raw head, ``(N, 5 + C, H/4, W/4)``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        c = input_shape[0]
        self.stem = ConvBNLeaky(c, 16, 3, stride=2)
        self.down1 = ConvBNLeaky(16, 32, 3, stride=2)
        self.res1 = DarknetResidual(32)
        self.down2 = ConvBNLeaky(32, 64, 3, stride=2)
        self.res2 = DarknetResidual(64)
        self.lateral = ConvBNLeaky(64, 32, 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse1 = ConvBNLeaky(64, 32, 1)
        self.fuse2 = ConvBNLeaky(32, 64, 3)
        self.head = nn.Conv2d(64, 5 + num_classes, 1)

    def forward(self, x):
        fine = self.res1(self.down1(self.stem(x)))
        coarse = self.res2(self.down2(fine))
        merged = torch.cat([self.upsample(self.lateral(coarse)), fine], dim=1)
        return self.head(self.fuse2(self.fuse1(merged)))


def yolo_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over images of: objectness BCE over all cells, plus on the cells holding a box centre, BCE of
    ``σ(t_x), σ(t_y)`` against the centre's offset in its cell, squared error of ``t_w, t_h`` against
    ``log(w/p), log(h/p)`` (both weighted by :data:`BOX_WEIGHT`) and class cross-entropy.

    ``target``: ``(N, M, 5)`` rows ``(class, x1, y1, x2, y2)``, class ``-1`` for padding (the ``shapes`` layout).
    """
    n, _, gh, gw = output.shape
    img, row = (target[..., 0] >= 0).nonzero(as_tuple=True)
    t = target[img, row]
    cx, cy = (t[:, 1] + t[:, 3]) / (2 * STRIDE), (t[:, 2] + t[:, 4]) / (2 * STRIDE)
    gx, gy = cx.floor().long().clamp(0, gw - 1), cy.floor().long().clamp(0, gh - 1)
    obj_target = torch.zeros_like(output[:, 0])
    obj_target[img, gy, gx] = 1.0
    loss = F.binary_cross_entropy_with_logits(output[:, 0], obj_target, reduction="sum")
    if len(img):
        p = output[img, :, gy, gx]  # (boxes, 5 + C)
        offsets = torch.stack([cx - gx, cy - gy], dim=1)
        sizes = torch.log(torch.stack([t[:, 3] - t[:, 1], t[:, 4] - t[:, 2]], dim=1) / ANCHOR)
        box = (F.binary_cross_entropy_with_logits(p[:, 1:3], offsets, reduction="sum")
               + F.mse_loss(p[:, 3:5], sizes, reduction="sum"))
        loss = loss + BOX_WEIGHT * box + F.cross_entropy(p[:, 5:], t[:, 0].long(), reduction="sum")
    return loss / n


@torch.no_grad()
def yolo_decode(output: torch.Tensor) -> list[Detections]:
    """Per-image detections: score ``σ(obj)·softmax(class)`` of each cell's best class, boxes by the box
    coding above (clipped to the image), candidates >= :data:`SCORE_THRESHOLD`, per-class NMS at IoU 0.5,
    at most :data:`MAX_DETECTIONS` per image."""
    output = output.float()
    n, _, gh, gw = output.shape
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=output.dtype), torch.arange(gw, dtype=output.dtype),
                            indexing="ij")
    cx = (xs + torch.sigmoid(output[:, 1])) * STRIDE
    cy = (ys + torch.sigmoid(output[:, 2])) * STRIDE
    half_w = ANCHOR * torch.exp(output[:, 3].clamp(max=MAX_LOG_SIZE)) / 2
    half_h = ANCHOR * torch.exp(output[:, 4].clamp(max=MAX_LOG_SIZE)) / 2
    boxes = torch.stack([(cx - half_w).clamp(0, gw * STRIDE), (cy - half_h).clamp(0, gh * STRIDE),
                         (cx + half_w).clamp(0, gw * STRIDE), (cy + half_h).clamp(0, gh * STRIDE)], dim=-1)
    probs = torch.sigmoid(output[:, :1]) * torch.softmax(output[:, 5:], dim=1)
    scores, labels = probs.max(dim=1)
    out = []
    for i in range(n):
        b, s, lab = boxes[i].reshape(-1, 4), scores[i].reshape(-1), labels[i].reshape(-1)
        keep = s >= SCORE_THRESHOLD
        b, s, lab = b[keep], s[keep], lab[keep]
        k = nms(b, s, lab, NMS_IOU, MAX_DETECTIONS)
        out.append(Detections(b[k].numpy().astype(np.float64), s[k].numpy().astype(np.float64), lab[k].numpy()))
    return out
