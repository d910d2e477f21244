"""The benchmark harness: protocol, suites, results database, executors, leaderboard and plots.

Python entry points for plugin authors::

    from quantzoo.bench import run_cell, get_baseline
    metrics = run_cell("uniform", "cnn", "digits", w_bits=4, a_bits=4, seed=0)
    metrics["accuracy"], metrics["fp_accuracy"], metrics["delta"]

    # a whole suite, as `quantzoo bench` runs it
    from quantzoo.bench import ResultsDB, load_suite, plan_suite, run_plan
    summary = run_plan(plan_suite(load_suite("quick")), ResultsDB("results.sqlite"), jobs=2)
"""

from .cache import BaselineCache, default_cache_dir
from .cell import FP_METHOD, Cell
from .configs import bits_config, load_method_config, read_config_file
from .data import get_baseline
from .db import ResultsDB
from .metrics import CellMetrics
from .run import execute_cell, make_cell, run_cell
from .protocol import DEFAULT_BASELINES, Budget, Protocol
from .runner import run_plan
from .suite import load_suite, plan_suite

__all__ = [
    "DEFAULT_BASELINES", "FP_METHOD", "BaselineCache", "Budget", "Cell", "CellMetrics", "Protocol",
    "ResultsDB", "bits_config", "default_cache_dir", "execute_cell", "get_baseline", "load_method_config",
    "load_suite", "make_cell", "plan_suite", "read_config_file", "run_cell", "run_plan",
]
