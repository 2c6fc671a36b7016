"""The model kinds. `MODELS` and `build` (kdgrid.models.registry) import torch, so they load on first
use: planning imports kdgrid.models.configs, the kinds' settings, without torch."""

__all__ = ["MODELS", "build"]


def __getattr__(name: str):
    if name in __all__:
        from kdgrid.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
