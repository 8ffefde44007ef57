"""The `lite` backbone's real weights: EfficientNet-Lite0 (ImageNet) and all-MiniLM-L6-v2, and the map."""
import numpy as np
import pytest
import torch
from PIL import Image

from crossgate.encoders.lite import heldout_retrieval, imagenet_synonyms

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def imagenet_top5(lite, filename):
    image = Image.fromarray(sklearn_datasets.load_sample_image(filename))
    with torch.inference_mode():
        logits = lite.image_model(lite.preprocess(image)[None])[0]
    names = imagenet_synonyms()
    return [names[i][0] for i in logits.topk(5).indices.tolist()]


def test_efficientnet_weights_name_sample_photos(lite):
    assert imagenet_top5(lite, "china.jpg")[0] in {"palace", "monastery"}
    assert imagenet_top5(lite, "flower.jpg")[0] == "daisy"


def test_image_features_are_pooled_1280d(lite):
    image = Image.fromarray(sklearn_datasets.load_sample_image("flower.jpg"))
    feats = lite.encode_images(torch.stack([lite.preprocess(image)] * 2))
    assert feats.shape == (2, 1280) and feats.dtype == np.float32
    # the pooled features are what the ImageNet head reads: head(features) == model(image)
    head = lite.image_model.classifier
    with torch.inference_mode():
        direct = lite.image_model(lite.preprocess(image)[None])[0]
        via = head(torch.from_numpy(feats[:1]))[0]
    assert torch.allclose(direct, via, atol=1e-4)


def test_minilm_understands_paraphrases(lite):
    emb = lite.encode_native(["a photo of a dog", "a picture of a puppy", "a bowl of tomato soup"])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    sim = emb @ emb.T
    assert sim[0, 1] > 0.6 and sim[0, 1] > sim[0, 2] + 0.3


def test_text_map_generalises_to_held_out_classes(lite):
    fitted = lite.text_map
    assert fitted["weight"].shape == (384, 1280) and fitted["bias"].shape == (1280,)
    # cross-validated retrieval over 200 held-out classes per fold; chance is 1/200
    assert fitted["cv_retrieval"].max() > 0.25
    assert fitted["alpha"][0] in (0.01, 0.1, 1.0, 10.0, 100.0)


def test_mapped_text_scores_images_like_the_imagenet_head(lite):
    image = Image.fromarray(sklearn_datasets.load_sample_image("flower.jpg"))
    feat = lite.encode_images(lite.preprocess(image)[None])[0]
    names = ["daisy", "palace", "goldfish", "fire engine", "banana", "laptop"]
    text = lite.encode_texts([f"a photo of a {n}." for n in names])
    assert text.shape == (6, 1280)
    assert names[int(np.argmax(text @ feat))] == "daisy"


def test_text_map_is_cached(lite, session_cache):
    from crossgate.encoders import create_encoder

    lite.text_map  # noqa: B018  (fits or loads it)
    again = create_encoder("lite", cache_dir=session_cache)
    assert list((session_cache / "textmaps").glob("*.safetensors"))
    np.testing.assert_array_equal(again.text_map["weight"], lite.text_map["weight"])
    assert "image_model" not in again.__dict__  # loading the cached map needed no model


def test_identity_names_weights_and_preprocessing(lite):
    ident = lite.identity
    assert ident.startswith("lite[") and "effnet-lite0@" in ident and "minilm-l6-v2@" in ident
    assert "bicubic224" in ident


def test_heldout_retrieval_is_perfect_for_an_exact_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8))
    y = x @ rng.normal(size=(8, 16))
    assert heldout_retrieval(x, y, alpha=1e-6) == 1.0


def test_lite_identity_says_where_features_were_computed():
    """GPU kernels round differently from the CPU's: features computed on a GPU must not share the CPU's
    cache entries (constructing the encoder loads no model, so this runs without a GPU)."""
    from crossgate.encoders.base import same_model
    from crossgate.encoders.lite import LiteEncoder

    cpu, cuda = LiteEncoder(device="cpu").identity, LiteEncoder(device="cuda").identity
    assert cpu != cuda and cuda.endswith(";channels_last];cuda-fp32") and cpu.endswith(";channels_last]")
    tensor = LiteEncoder(device="cuda").use_decode("auto").identity
    assert tensor == cuda + ";decode=torch-bicubic224-crop224-mean0.5,0.5,0.5-std0.5,0.5,0.5"
    assert same_model(cpu, cuda) and same_model(cpu, tensor) and same_model(tensor, cpu)  # predict accepts
    assert not same_model(cpu, cpu.replace("map=", "map=other-"))
