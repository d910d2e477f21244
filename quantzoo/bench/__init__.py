"""The benchmark harness: protocol, suites, results database, executors, leaderboard and plots.

Python entry points for plugin authors::

    from quantzoo.bench import run_cell, get_baseline
    metrics = run_cell("uniform", "cnn", "digits", w_bits=4, a_bits=4, seed=0)
    metrics["accuracy"], metrics["fp_accuracy"], metrics["delta"]
"""

from .cache import BaselineCache, default_cache_dir
from .cell import FP_METHOD, Cell, NonFiniteOutputError, get_baseline
from .configs import bits_config, load_method_config, read_config_file
from .execute import execute_cell, make_cell, run_cell
from .protocol import DEFAULT_BASELINES, Budget, Protocol

__all__ = [
    "DEFAULT_BASELINES", "FP_METHOD", "BaselineCache", "Budget", "Cell", "NonFiniteOutputError", "Protocol",
    "bits_config", "default_cache_dir", "execute_cell", "get_baseline", "load_method_config", "make_cell",
    "read_config_file", "run_cell",
]
