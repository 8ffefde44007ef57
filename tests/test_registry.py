import pytest

from crossgate.datasets import list_datasets, load_dataset
from crossgate.encoders import create_encoder, list_backbones
from crossgate.errors import UserError
from crossgate.methods import create_method, list_methods
from crossgate.registry import Registry


def test_registry_register_get_names():
    reg = Registry("widget")

    @reg.register("a")
    def make_a():
        """Makes an a."""
        return "A"

    assert reg.names() == ["a"] and reg.create("a") == "A" and reg.help("a") == "Makes an a."
    with pytest.raises(ValueError):
        reg.register("a")(make_a)
    with pytest.raises(UserError, match=r"unknown widget 'b'; available: a"):
        reg.create("b")


def test_first_entries_are_registered():
    assert {"lite", "tiny-clip"} <= set(list_backbones())
    assert {"fashion-mnist", "fashion-mnist-full"} <= set(list_datasets())
    assert list_methods()[:2] == ["zeroshot", "linear"]


@pytest.mark.parametrize("factory, kind, listed", [
    (lambda: create_encoder("resnet9000"), "backbone", "lite"),
    (lambda: load_dataset("imagenet-9000"), "dataset", "fashion-mnist"),
    (lambda: create_method("magic"), "method", "zeroshot"),
])
def test_unknown_names_list_the_available_ones(factory, kind, listed):
    with pytest.raises(UserError, match=rf"unknown {kind} .*available: .*{listed}"):
        factory()


def test_unknown_open_clip_architecture_and_tag():
    with pytest.raises(UserError, match="unknown open_clip architecture 'NoSuchNet'"):
        create_encoder("openclip:NoSuchNet/openai")
    with pytest.raises(UserError, match=r"unknown pretrained tag 'nonsense' for RN50; available: .*openai"):
        create_encoder("openclip:RN50/nonsense")
