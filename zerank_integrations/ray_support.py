"""Ray is an optional extra (``pip install "zerank-integrations[ray]"``): one place says how to get it."""

from __future__ import annotations

from types import ModuleType

RAY_INSTALL_HINT = 'pip install "zerank-integrations[ray]"'


class RayNotInstalledError(ImportError):
    """Ray (or Ray Serve / Ray Data) is missing; the message names the extra to install."""


def require_ray(feature: str, module: str = "ray") -> ModuleType:
    """Import ``module`` (``"ray"``, ``"ray.serve"``, ``"ray.data"``) or fail naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise RayNotInstalledError(f"{feature} needs Ray ({module} is not installed): {RAY_INSTALL_HINT}") from error
