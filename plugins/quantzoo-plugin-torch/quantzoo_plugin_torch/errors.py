"""Errors from torch and torchao, translated at the plugin boundary into :class:`quantzoo.UnsupportedError`
whose one line names the layer or construct and the fix; the original stays as ``__cause__`` (shown by
``quantzoo --debug``)."""

from __future__ import annotations

import contextlib
import os
import re
import traceback
from collections.abc import Callable, Iterator

from torch import nn

from quantzoo.errors import QuantzooError, UnsupportedError

# Frames inside these packages are library internals; the innermost frame outside them is the user's code
# (the zoo's models count as user code).
_LIBRARY_DIRS = tuple(os.sep + d + os.sep for d in ("torch", "torchao", "quantzoo_plugin_torch", "quantzoo"))
_USER_DIRS = (os.sep + os.path.join("quantzoo", "models") + os.sep,)


def _is_library(filename: str) -> bool:
    return any(d in filename for d in _LIBRARY_DIRS) and not any(d in filename for d in _USER_DIRS)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def user_frame(exc: BaseException) -> str | None:
    """``file.py:12 (`code`)`` of the innermost traceback frame outside torch/torchao/quantzoo."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not _is_library(frame.filename):
            code = f" (`{frame.line.strip()}`)" if frame.line else ""
            return f"{os.path.basename(frame.filename)}:{frame.lineno}{code}"
    return None


def describe_trace_failure(exc: BaseException) -> str:
    """What in ``forward`` stopped ``torch.fx.symbolic_trace``, in words, with the line where it happened."""
    msg = first_line(exc)
    if "co_varnames is too small" in msg:
        return ("forward() is wrapped by a decorator with a (*args, **kwargs) signature (as transformers' "
                "@can_return_tuple does), from which torch.fx cannot build the graph's inputs")
    if "control flow" in msg:
        what = "data-dependent control flow (an if/while on a tensor's value)"
    elif "iterate" in msg or "len(" in msg:
        what = "iteration over a tensor or len() of it (its size is not known while tracing)"
    else:
        what = f"{type(exc).__name__}: {msg}"
    where = user_frame(exc)
    return f"{what} at {where}" if where else what


@contextlib.contextmanager
def translated(method: str, stage: str, fix: str) -> Iterator[None]:
    """Run a torch/torchao call; any non-quantzoo exception becomes ``UnsupportedError`` naming ``stage``, the
    user's line that triggered it (when there is one) and ``fix``."""
    try:
        yield
    except QuantzooError:
        raise
    except Exception as exc:
        where = user_frame(exc)
        at = f" at {where}" if where else ""
        raise UnsupportedError(f"{method}: {stage} failed{at} ({type(exc).__name__}: {first_line(exc)}); {fix}") \
            from exc


def locate_failure(model: nn.Module, run: Callable[[], object]) -> tuple[BaseException | None, str, str]:
    """Run ``run()`` with hooks that track which module is executing; ``(exception or None, name, type)`` of
    the innermost module that was running when it raised (``""`` for the root)."""
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[nn.Module] = []
    handles = []

    def enter(mod, _args):
        stack.append(mod)

    def leave(_mod, _args, _out):  # returns None: a forward hook's return value would replace the output
        stack.pop()

    for mod in model.modules():
        handles.append(mod.register_forward_pre_hook(enter))
        handles.append(mod.register_forward_hook(leave))
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - any error from the user's model is returned to be explained
        mod = stack[-1] if stack else model
        return exc, names.get(id(mod), ""), type(mod).__name__
    finally:
        for h in handles:
            h.remove()
    return None, "", ""


_NO_KERNEL = re.compile(r"Could not run '([^']+)' with arguments from the 'Quantized\w*' backend")


def explain_int8_failure(method: str, exc: BaseException, layer: str, layer_type: str,
                         trace_problem: str | None) -> UnsupportedError:
    """The one-line error for an int8 model whose first forward fails (``layer`` is where; ``trace_problem``
    is :func:`describe_trace_failure` of why the model could not be prepared automatically, if so)."""
    where = f"layer {layer!r} ({layer_type})" if layer else f"the forward() of {layer_type} itself"
    missing = _NO_KERNEL.search(str(exc))
    what = (f"runs {missing.group(1)} on int8 tensors, which has no int8 kernel in eager mode" if missing
            else f"fails on int8 tensors ({type(exc).__name__}: {first_line(exc)})")
    if trace_problem is not None:
        fix = (f"the plugin places FloatFunctional/QuantStub/DeQuantStub itself only when torch.fx can trace "
               f"forward(), and it cannot: {trace_problem}; make that part traceable, edit "
               "the op by hand (FloatFunctional, or DeQuantStub/QuantStub around it), or use 'torch-dynamic'")
    else:
        fix = "use 'torch-fx' or 'torch-dynamic' for this model"
    err = UnsupportedError(f"{method}: {where} {what}; {fix}")
    err.__cause__ = exc
    return err
