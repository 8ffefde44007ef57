# registers the methods; this order is the listing order
from . import zeroshot, probe, tip, linear, gda, proker, lpp, clap, ape, taskres, gate  # noqa: F401, I001
from .base import METHODS, FewShotClassifier


def create_method(name: str, **params) -> FewShotClassifier:
    return METHODS.create(name, **params)


def list_methods() -> list[str]:
    return METHODS.names()


def config_class(name: str):
    """The config dataclass a method registered with itself."""
    return METHODS.factory(name).config_class


__all__ = ["METHODS", "FewShotClassifier", "config_class", "create_method", "list_methods"]
