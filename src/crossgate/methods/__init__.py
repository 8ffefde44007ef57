"""The few-shot methods: every module of this package registers its methods when imported, so adding a
method is adding a file."""
import importlib
import pkgutil

from .base import METHODS, FewShotClassifier

# the listing order of the built-in methods; any other module here is imported after them, by name
_LISTING = ("zeroshot", "probe", "tip", "linear", "gda", "proker", "lpp", "clap", "ape", "taskres", "gate")
_modules = [m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"]
for _name in [*_LISTING, *sorted(set(_modules) - set(_LISTING))]:
    importlib.import_module(f"{__name__}.{_name}")


def create_method(name: str, **params) -> FewShotClassifier:
    return METHODS.create(name, **params)


def list_methods() -> list[str]:
    return METHODS.names()


def new_class_methods() -> list[str]:
    """The methods that can classify classes they were not trained on, from their texts (base-to-new)."""
    return [m for m in METHODS.names() if METHODS.factory(m).names_new_classes]


__all__ = ["METHODS", "FewShotClassifier", "create_method", "list_methods", "new_class_methods"]
