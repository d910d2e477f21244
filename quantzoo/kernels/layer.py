"""One packed layer on the bit-serial kernels: its weights in the kernel layout, its input encoding and epilogue.

:func:`plan_kernel` decides whether a :class:`~quantzoo.nn.packed.PackedLayer` can run on the kernels —
binary (±α) or ternary (α·{−1, 0, +1}) weights AND an input quantizer whose codes the kernels compute
(:mod:`quantzoo.kernels.inputs`) — and returns a :class:`BitKernel`, or the reason it stays on the float path.
"""

from __future__ import annotations

import ctypes

import torch

from ..math import unpack_bits
from .build import ISAS, _Layer, library, select_isa, unavailable_reason
from .inputs import KernelInput, kernel_input

_IN_KIND = {"sign": 0, "unit": 1, "affine": 2}
_W_KIND = {"binary": 0, "ternary": 1}


def weight_kind(layer) -> str | None:
    """``"binary"`` for 1-bit codes ``w = (c − ½)·2α`` (= ±α), ``"ternary"`` for 2-bit codes ``w = (c − 1)·α``
    with ``c ≤ 2`` (TWN's α·{−1, 0, +1}); None for any other grid."""
    offset = layer.weight_offset
    if offset.numel() != 1:
        return None
    if layer.weight_bits == 1 and float(offset) == 0.5:
        return "binary"
    if layer.weight_bits == 2 and float(offset) == 1.0:
        codes = unpack_bits(layer.packed_weight, layer.storage_bits, layer.numel)
        return "ternary" if int(codes.max()) <= 2 else None
    return None


def _geometry(layer) -> dict | str:
    """The layer as a 2-D convolution (Linear: 1×1 on a 1×1 image; Conv1d: height 1)."""
    shape = layer.weight_shape
    if layer.kind == "linear":
        return dict(C=shape[1], KH=1, KW=1, SH=1, SW=1, PH=0, PW=0, DH=1, DW=1)
    if isinstance(layer.padding, str):
        return f"string padding {layer.padding!r}"
    if layer.groups != 1:
        return f"grouped convolution (groups={layer.groups})"
    def one(v):
        return v[0] if isinstance(v, (tuple, list)) else v

    if layer.kind == "conv1d":
        return dict(C=shape[1], KH=1, KW=shape[2], SH=1, SW=one(layer.stride), PH=0, PW=one(layer.padding), DH=1,
                    DW=one(layer.dilation))
    pair = [tuple(v) if isinstance(v, (tuple, list)) else (v, v) for v in (layer.stride, layer.padding, layer.dilation)]
    (sh, sw), (ph, pw), (dh, dw) = pair
    return dict(C=shape[1], KH=shape[2], KW=shape[3], SH=sh, SW=sw, PH=ph, PW=pw, DH=dh, DW=dw)


def plan_kernel(layer, isa: str | None = None) -> "BitKernel | str":
    """A :class:`BitKernel` for ``layer`` (a :class:`~quantzoo.nn.packed.PackedLayer`), or why it stays float."""
    if library() is None:
        return f"kernels unavailable: {unavailable_reason()}"
    weights = weight_kind(layer)
    if weights is None:
        return f"{layer.weight_bits}-bit weights are neither binary nor ternary"
    enc = kernel_input(layer.input_quantizer)
    if isinstance(enc, str):
        return enc
    geom = _geometry(layer)
    if isinstance(geom, str):
        return geom
    if enc.scale_map == "xnor" and layer.kind == "conv1d":
        return "XNOR K map of a Conv1d"  # the plugin builds it; the kernel computes the 2-D case only
    return BitKernel(layer, enc, weights, select_isa(isa))


class BitKernel:
    """``layer``'s computation on the bit-serial kernels (see :mod:`quantzoo.kernels`).

    Holds the weight rows in the kernel's layout (prepared from the layer's packed codes), the integer sums the
    epilogue needs, the per-channel scale ``α·(input code step)`` and the affine map of a folded BatchNorm
    (``layer.folded_norm``); rebuilds them when a buffer they come from changes (e.g. ``load_state_dict``).
    """

    def __init__(self, layer, enc: KernelInput, weights: str, isa: str):
        self.enc, self.weights, self.isa = enc, weights, isa
        self.kind = layer.kind
        self.geom = _geometry(layer)
        # Codes of several bits: bit-serial costs planes x weight rows popcounts per word; past 2 of them the
        # byte kernel (one VPMADDUBSW multiply-add per 32 codes) is cheaper.
        self.bytes_mode = enc.kind != "sign" and enc.bits * (2 if weights == "ternary" else 1) > 2
        if self.bytes_mode:
            self.name = f"{weights}-i{enc.bits}-{isa}"
        else:
            base = "ternary" if weights == "ternary" else ("xnor" if enc.kind == "sign" else "and")
            self.name = f"{base}{f'-a{enc.bits}' if enc.bits > 1 else ''}-{isa}"
        self._src = []
        self._struct = None
        self._prepare(layer)

    # -- weights --------------------------------------------------------------------------------------------
    @staticmethod
    def _sources(layer) -> list:
        """The tensors the prepared data is made of (read without nn.Module's slow attribute lookup)."""
        b = layer._buffers
        out = [b["packed_weight"], b["weight_scale"], b["weight_offset"], b.get("bias")]
        bn = layer.__dict__.get("folded_norm")
        if bn is not None:
            out += [bn._buffers["running_mean"], bn._buffers["running_var"], bn._parameters.get("weight"),
                    bn._parameters.get("bias")]
        return out

    def _stale(self, layer) -> bool:
        """A source tensor was replaced or changed in place since :meth:`_prepare` (``self._src`` keeps the old
        ones alive, so ``is`` cannot be fooled by a recycled object)."""
        cur = self._sources(layer)
        return len(cur) != len(self._src) or any(
            c is not t or (c is not None and c._version != v) for c, (t, v) in zip(cur, self._src))

    @torch.no_grad()
    def _prepare(self, layer) -> None:
        lib = library()
        g = self.geom
        out_ch, C, KH, KW = layer.weight_shape[0], g["C"], g["KH"], g["KW"]
        codes = unpack_bits(layer.packed_weight, layer.storage_bits, layer.numel).to(torch.int32)
        codes = codes.reshape(out_ch, C, KH, KW)
        if self.weights == "binary":  # v = 2c − 1: one row per channel, neg_o (c = 0)
            v = 2 * codes - 1
            rows = codes == 0
            alpha = layer.weight_scale.float() / 2
        else:                         # v = c − 1: rows pos_o (c = 2), then neg_o (c = 0)
            v = codes - 1
            rows = torch.cat([(codes == 2), (codes == 0)])
            alpha = layer.weight_scale.float()
        taps_per_seg = KW if g["DW"] == 1 else 1
        nseg = KH * KW // taps_per_seg
        seg_words = -(-taps_per_seg * ((C + 7) // 8) // 8)
        if self.bytes_mode:  # weight values as int8 rows [O padded to 4][nseg][seg_vecs*32], zero-filled
            seg_bytes = taps_per_seg * C
            seg_vecs = -(-seg_bytes // 32)
            rows8 = torch.zeros(-(-out_ch // 4) * 4, nseg, seg_vecs * 32, dtype=torch.int8)
            rows8[:out_ch, :, :seg_bytes] = v.permute(0, 2, 3, 1).reshape(out_ch, nseg, seg_bytes).to(torch.int8)
            self._wb, self._w, groups = rows8.contiguous(), None, 0
        else:
            self._w = self._pack(lib, rows, taps_per_seg, seg_words)
            self._wb, seg_vecs = None, 0
            groups = self._w.numel() // (nseg * seg_words * 8)
        self._vtap = v.sum(dim=1).reshape(out_ch, KH * KW).t().to(torch.int32).contiguous()  # [taps][O]
        self._vsum = self._vtap.sum(dim=0, dtype=torch.int32).contiguous()
        alpha = alpha.expand(out_ch) if alpha.numel() == 1 else alpha.reshape(out_ch)
        self._scale = (alpha * torch.tensor(self.enc.value_scale, dtype=torch.float32)).contiguous()
        self._bias = layer.bias.detach().float().contiguous() if layer.bias is not None else None
        self._post = None
        bn = layer.folded_norm
        if bn is not None:  # eval BatchNorm as y·g + h, g = γ/√(σ² + ε), h = β − μ·g
            g = torch.ones_like(bn.running_var) if bn.weight is None else bn.weight.detach().float()
            g = g / torch.sqrt(bn.running_var + bn.eps)
            h = (0.0 if bn.bias is None else bn.bias.detach().float()) - bn.running_mean * g
            self._post = (g.contiguous(), h.contiguous())
        self._layout = dict(O=out_ch, groups=groups, nseg=nseg, seg_words=seg_words, taps_per_seg=taps_per_seg,
                            bytes_mode=int(self.bytes_mode), seg_vecs=seg_vecs)
        self._struct = None
        self._src = [(t, t._version if t is not None else None) for t in self._sources(layer)]

    @staticmethod
    def _pack(lib, rows: torch.Tensor, taps_per_seg: int, seg_words: int) -> torch.Tensor:
        """Bit rows ``[R][C][KH][KW]`` in the kernel's layout (``qz_pack_weight``), as int64 words."""
        R, C, KH, KW = rows.shape
        planes = rows.permute(0, 2, 3, 1).contiguous().to(torch.uint8)  # [R][KH][KW][C]
        nseg = KH * KW // taps_per_seg
        out = torch.empty(-(-R // 8) * nseg * seg_words * 8, dtype=torch.int64)
        lib.qz_pack_weight(planes.data_ptr(), R, KH, KW, C, taps_per_seg, seg_words, out.data_ptr())
        return out

    def _layer_struct(self) -> _Layer:
        if self._struct is None:
            e, g, lay = self.enc, self.geom, self._layout
            fields = dict(g, **lay)
            pad_code = 0
            qmin = qmax = zp = 0
            if e.kind == "unit":
                qmax = 2**e.bits - 1
            elif e.kind == "affine":
                qmin, qmax, zp = e.qmin, e.qmax, e.zero_point
                pad_code = zp - qmin
            def ptr(t):
                return t.data_ptr() if t is not None else None

            self._struct = _Layer(
                **fields, in_kind=_IN_KIND[e.kind], planes=e.bits, prescale=e.prescale,
                levels=float(2**e.bits - 1), scale_in=e.scale, zero_point=zp, qmin=qmin, qmax=qmax,
                pad_code=pad_code, kmap=int(e.scale_map == "xnor"), w_kind=_W_KIND[self.weights],
                w=ptr(self._w), wb=ptr(self._wb), vtap=ptr(self._vtap), vsum=ptr(self._vsum), scale=ptr(self._scale),
                bias=ptr(self._bias), post_scale=ptr(self._post[0]) if self._post else None,
                post_shift=ptr(self._post[1]) if self._post else None)
        return self._struct

    def __getstate__(self):  # the ctypes struct holds raw pointers: rebuilt after a copy
        state = dict(self.__dict__)
        state["_struct"] = None
        return state

    # -- running ----------------------------------------------------------------------------------------------
    def accepts(self, layer, x: torch.Tensor) -> bool:
        """True where the kernel can compute this call: a float32 CPU tensor of the layer's rank and channels
        that needs no gradient (the kernels have no backward; the float path computes the same values)."""
        if x.device.type != "cpu" or x.dtype != torch.float32 or (x.requires_grad and torch.is_grad_enabled()):
            return False
        rank = {"linear": None, "conv1d": 3, "conv2d": 4}[self.kind]
        if rank is None:  # a folded BatchNorm1d normalizes dim 1: the features only for 2-D inputs
            return (x.dim() == 2 or (x.dim() >= 1 and layer.folded_norm is None)) and x.shape[-1] == self.geom["C"]
        return x.dim() == rank and x.shape[1] == self.geom["C"] and all(n > 0 for n in self._out_hw(x))

    def _out_hw(self, x):
        g = self.geom
        if self.kind == "linear":
            return 1, 1
        H = 1 if self.kind == "conv1d" else x.shape[2]
        W = x.shape[-1]
        return ((H + 2 * g["PH"] - g["DH"] * (g["KH"] - 1) - 1) // g["SH"] + 1,
                (W + 2 * g["PW"] - g["DW"] * (g["KW"] - 1) - 1) // g["SW"] + 1)

    def run(self, layer, x: torch.Tensor, *, dots: bool = False) -> torch.Tensor:
        """The layer's output (before its output quantizer) for input ``x``; ``dots=True`` returns the exact
        integer sums ``d`` instead, int32 in the same layout."""
        if self._stale(layer):
            self._prepare(layer)
        if self.enc.norm is not None:
            x = self.enc.norm(x)
        out_ch = self._layout["O"]
        if self.kind == "linear":
            lead = x.shape[:-1]
            x = x.reshape(-1, self.geom["C"])
            N, H, W = x.shape[0], 1, 1
            strides = (x.stride(0), x.stride(1), 0, 0)
        elif self.kind == "conv1d":
            N, _, W = x.shape
            H = 1
            strides = (x.stride(0), x.stride(1), 0, x.stride(2))
        else:
            N, _, H, W = x.shape
            strides = x.stride()  # any layout: the packer reads NCHW or channels-last in place
        OH, OW = self._out_hw(x)
        res = torch.empty(N, OH, OW, out_ch, dtype=torch.int32 if dots else torch.float32)
        out_ptr, dots_ptr = (None, res.data_ptr()) if dots else (res.data_ptr(), None)
        rc = library().qz_forward(ctypes.byref(self._layer_struct()), ISAS[self.isa], x.data_ptr(),
                                  (ctypes.c_int64 * 4)(*strides), N, H, W, OH, OW, out_ptr, dots_ptr)
        if rc != 0:
            raise RuntimeError(f"bit-serial kernel {self.name} failed (code {rc})")
        if self.kind == "linear":
            return res.reshape(*lead, out_ch)
        if self.kind == "conv1d":
            return res.reshape(N, OW, out_ch).permute(0, 2, 1)
        return res.permute(0, 3, 1, 2)  # channels-last memory, NCHW shape
