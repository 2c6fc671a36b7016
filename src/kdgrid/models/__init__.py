from kdgrid.models.registry import MODELS, build

__all__ = ["MODELS", "build"]
