from . import zeroshot, probe, tip, linear, gate  # noqa: F401, I001  (registers methods; this order is the listing order)
from .base import METHODS, FewShotClassifier


def create_method(name: str, **params) -> FewShotClassifier:
    return METHODS.create(name, **params)


def list_methods() -> list[str]:
    return METHODS.names()


__all__ = ["METHODS", "FewShotClassifier", "create_method", "list_methods"]
