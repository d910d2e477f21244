"""Loading saved quantization state into a freshly built module whose buffers have other shapes."""

from __future__ import annotations

import torch
from torch import nn


class AdoptSavedShapes(nn.Module):
    """Mixin: on ``load_state_dict``, buffers and parameters take the shapes saved in the state dict.

    A freshly prepared module starts with scalar qparams (``scale``, ``zero_point``, clip values); after
    calibration some are per-channel vectors. Loading a saved model must adopt those shapes instead of
    failing with a size mismatch. Only tensors present in both the module and the state dict change.
    """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for store in (self._buffers, self._parameters):
            for name, t in store.items():
                saved = state_dict.get(prefix + name)
                if t is not None and torch.is_tensor(saved) and saved.shape != t.shape:
                    if isinstance(t, nn.Parameter):
                        t.data = torch.empty_like(saved)
                    else:
                        store[name] = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
