"""The one place that makes MXNet 1.9.1 importable on Python 3.11-3.13 with numpy 1.23-1.26.

Every entry point, library module and test imports MXNet through this module::

    from config.mxnet_compat import mx

(or imports this module before any ``mxnet`` submodule). Nothing else in the project patches
numpy; ``tests/test_mxnet_compat.py`` checks both rules over every file.

Two things that MXNet 1.9.1 (its last release, 2022) relies on are gone on today's Pythons:

- numpy 1.24 removed the aliases ``np.bool``, ``np.int``, ``np.float``, ``np.complex``,
  ``np.object`` and ``np.str``. MXNet reads ``np.bool`` while it is imported
  (``mxnet/numpy/utils.py``) and again at run time (boolean indexing in ``mxnet/numpy``).
  numpy 1.23 is the last release that has them, and it has no wheel for Python 3.12 or 3.13,
  so there the aliases are put back, bound to the builtins they always meant.
- Python 3.12 removed ``distutils``; MXNet imports ``distutils.version`` (its numpy dispatch
  protocol). setuptools provides a ``distutils`` in its place; requirements.txt installs it on
  Python 3.12 and newer.

On Python 3.11 with numpy 1.23.5 this module changes nothing: the aliases still exist there
(deprecated) and are left as numpy defines them.
"""
from __future__ import annotations

import builtins
import importlib
import sys

import numpy as np

# numpy < 1.24 still has these (with a DeprecationWarning); 1.24-1.26 raise AttributeError.
REMOVED_NUMPY_ALIASES = ("bool", "int", "float", "complex", "object", "str")
NUMPY_ALIASES_REMOVED_IN = (1, 24)
DISTUTILS_REMOVED_IN = (3, 12)
SUPPORTED_NUMPY = "numpy 1.23-1.26 (MXNet 1.9.1 does not import with numpy 2)"


def numpy_version() -> tuple[int, int]:
    """The installed numpy's (major, minor)."""
    major, minor = np.__version__.split(".")[:2]
    return int(major), int(minor)


def restore_numpy_aliases() -> list[str]:
    """Put back the numpy aliases that MXNet 1.9.1 uses; return the names added.

    Only on numpy 1.24 and newer, and only names numpy no longer defines itself.
    """
    if numpy_version() < NUMPY_ALIASES_REMOVED_IN:
        return []
    added = []
    for name in REMOVED_NUMPY_ALIASES:
        if name not in np.__dict__:
            setattr(np, name, getattr(builtins, name))
            added.append(name)
    return added


def check_numpy() -> None:
    """Refuse numpy 2 before MXNet fails on it with an AttributeError deep inside its import."""
    if numpy_version() >= (2, 0):
        raise ImportError(f"numpy {np.__version__} is installed, but MXNet 1.9.1 needs "
                          f"{SUPPORTED_NUMPY}: run 'python -m pip install -r requirements.txt' "
                          "(it pins a numpy below 2 for every supported Python)")


def check_distutils() -> None:
    """On Python 3.12+, make sure ``distutils`` (setuptools' copy) can be imported."""
    if sys.version_info[:2] < DISTUTILS_REMOVED_IN:
        return
    try:
        importlib.import_module("distutils.version")
    except ImportError:
        raise ImportError(
            f"Python {sys.version_info[0]}.{sys.version_info[1]} has no distutils, which "
            "MXNet 1.9.1 imports; install setuptools (it provides one): "
            "'python -m pip install -r requirements.txt'") from None


def import_mxnet():
    """Make the environment ready for MXNet 1.9.1 and return the imported ``mxnet`` module."""
    check_numpy()
    restore_numpy_aliases()
    check_distutils()
    return importlib.import_module("mxnet")


mx = import_mxnet()
