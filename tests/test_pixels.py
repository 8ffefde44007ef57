"""The tensor decode path (crossgate.pixels), run on the CPU: the same code a GPU runs with nvjpeg."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from crossgate import pixels
from crossgate.cache import FeatureCache
from crossgate.datasets.imagefolder import ImageFolderDataset
from crossgate.encoders import create_encoder
from crossgate.errors import UserError
from crossgate.images import open_rgb


def photo(seed, h=150, w=200):
    """A smooth, photo-like image (JPEG artefacts on pure noise would dominate any comparison)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + rng.uniform(0, 6)), np.cos(5 * y + rng.uniform(0, 6)), np.sin(4 * (x + y))], -1)
    return Image.fromarray((base * 90 + 128 + rng.normal(0, 10, (h, w, 3))).clip(0, 255).astype(np.uint8))


@pytest.fixture
def odd_files(tmp_path):
    """One file of every kind the tensor decoder must route: plain JPEG, progressive, CMYK, grayscale, PNG."""
    files = {"plain": tmp_path / "plain.jpg", "progressive": tmp_path / "prog.jpg", "cmyk": tmp_path / "cmyk.jpg",
             "gray": tmp_path / "gray.jpg", "png": tmp_path / "img.png"}
    photo(0).save(files["plain"], quality=90)
    photo(1).save(files["progressive"], progressive=True)
    photo(2).convert("CMYK").save(files["cmyk"])
    photo(3).convert("L").save(files["gray"])
    photo(4).save(files["png"])
    return files


def test_spec_read_from_the_encoders_preprocessing(tiny):
    lite = create_encoder("lite")
    assert lite.pixel_spec == pixels.PixelSpec(224, 224, (0.5,) * 3, (0.5,) * 3, "bicubic")
    assert tiny.pixel_spec.size == tiny.pixel_spec.crop == 32


def test_a_preprocessing_the_tensor_path_cannot_run_keeps_pil():
    from torchvision import transforms as T

    assert pixels.spec_of(T.Compose([T.RandomResizedCrop(224), T.ToTensor()])) is None
    assert pixels.spec_of(T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])) is None
    encoder = create_encoder("tiny-clip")
    encoder.preprocess = T.Compose([T.RandomResizedCrop(32), T.ToTensor()])
    with pytest.raises(UserError, match="--decode pil"):
        encoder.use_decode("torch")
    assert encoder.use_decode("auto").decode == "pil"


def test_auto_is_pil_on_the_cpu_and_the_identity_names_the_decode(tiny):
    encoder = create_encoder("tiny-clip", decode="auto")
    assert encoder.decode == "pil" and "decode=" not in encoder.identity
    torch_ = create_encoder("tiny-clip", decode="torch")
    assert torch_.identity == encoder.identity + ";decode=" + encoder.pixel_spec.identity
    with pytest.raises(UserError, match="--decode must be one of"):
        create_encoder("tiny-clip", decode="nvjpeg")


@pytest.mark.parametrize("kind", ["plain", "progressive", "cmyk", "gray", "png"])
def test_tensor_pixels_match_pil_within_one_level(odd_files, kind):
    """Against the PIL path, pixel by pixel: decoder and resize round a few values one or two uint8 levels
    apart (libjpeg-turbo's upsampling against PIL's libjpeg, torch's bicubic against PIL's)."""
    spec = create_encoder("lite").pixel_spec
    route, payload = pixels.read_for_decode(odd_files[kind], "")
    assert route == ("jpeg" if kind == "plain" else "rgb")  # the rest are not nvjpeg's to decode
    image = pixels.decode_jpegs([payload], "cpu")[0] if route == "jpeg" else torch.from_numpy(payload).permute(2, 0, 1)
    ours = pixels.preprocess_batch([image], spec)[0]
    reference = create_encoder("lite").preprocess(open_rgb(odd_files[kind], ""))
    one_level = 1 / 255 / 0.5
    assert ours.shape == reference.shape
    assert float((ours - reference).abs().max()) <= 2 * one_level + 1e-6
    assert float((ours - reference).abs().mean()) < 0.05 * one_level


def test_flip_mirrors_before_the_resize(odd_files):
    spec = create_encoder("lite").pixel_spec
    image = pixels.decode_jpegs([pixels.read_for_decode(odd_files["plain"], "")[1]], "cpu")[0]
    flipped = pixels.preprocess_batch([image], spec, flip=[True])[0]
    reference = create_encoder("lite").preprocess(open_rgb(odd_files["plain"], "").transpose(
        Image.Transpose.FLIP_LEFT_RIGHT))
    assert float((flipped - reference).abs().max()) <= 2 / 255 / 0.5 + 1e-6


def test_truncated_and_missing_files_are_user_errors(tmp_path, odd_files):
    data = odd_files["plain"].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot read image .*cut.jpg"):
        pixels.read_for_decode(tmp_path / "cut.jpg", "")
    with pytest.raises(UserError, match="missing image .*gone.jpg; restore it"):
        pixels.read_for_decode(tmp_path / "gone.jpg", "restore it")


def test_a_refused_batch_is_decoded_file_by_file(monkeypatch, odd_files):
    """nvjpeg fails a whole batch for one bad file: the others still decode, the refused one is None."""
    import torchvision.io

    real = torchvision.io.decode_jpeg
    good = pixels.read_for_decode(odd_files["plain"], "")[1]
    poison = torch.frombuffer(bytearray(b"\xff\xd8 not really a jpeg \xff\xd9"), dtype=torch.uint8)

    def picky(data, **kw):
        if isinstance(data, list):
            if any(d is poison for d in data):
                raise RuntimeError("batch failed")
            return [real(d, **kw) for d in data]
        if data is poison:
            raise RuntimeError("refused")
        return real(data, **kw)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", picky)
    out = pixels.decode_jpegs([good, poison, good], "cpu")
    assert out[1] is None and out[0].shape == out[2].shape == (3, 150, 200)


def _folder(root, n_per_class=5):
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for k in range(n_per_class):
            image = photo(10 * c + k, 120 + 7 * k, 160)
            image.save(root / name / f"{k}.jpg", quality=92) if k % 3 else image.save(root / name / f"{k}.png")
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_extraction_with_the_tensor_decode_matches_pil_features(tmp_path, workers):
    """Whole extraction (loader, regrouping, prefetch thread, chunks) through the tensor path against the
    PIL path: features nearly equal, in the same order, under separate cache entries."""
    data = ImageFolderDataset(_folder(tmp_path / "imgs"))
    pil, tensor = create_encoder("tiny-clip", decode="pil"), create_encoder("tiny-clip", decode="torch")
    cache = FeatureCache(tmp_path / "cache", batch_size=3, workers=workers, progress=False)
    for view in ("center", "flip"):
        a = cache.image_features(pil, data, "train", view)
        b = cache.image_features(tensor, data, "train", view)
        assert np.array_equal(a.labels, b.labels)
        cos = np.sum(a.x * b.x, 1) / np.linalg.norm(a.x, axis=1) / np.linalg.norm(b.x, axis=1)
        assert cos.min() > 0.999
    assert len(list((tmp_path / "cache" / "features" / "image").glob("*.json"))) == 4


def test_an_unreadable_file_is_reported_by_the_tensor_path_too(tmp_path):
    root = _folder(tmp_path / "imgs")
    data = (root / "cat" / "1.jpg").read_bytes()
    (root / "cat" / "1.jpg").write_bytes(data[: len(data) // 3])
    dataset = ImageFolderDataset(root)
    cache = FeatureCache(tmp_path / "cache", batch_size=4, progress=False)
    errors = []
    for split in ("train", "val", "test"):
        try:
            cache.image_features(create_encoder("tiny-clip", decode="torch"), dataset, split)
        except UserError as err:
            errors.append(str(err))
    assert len(errors) == 1 and "cat/1.jpg" in errors[0] and "--on-bad-image skip" in errors[0]


def _encoded(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, **options)
    return out.getvalue()


def test_the_header_scan_sends_to_the_device_decoder_exactly_what_pil_calls_baseline_rgb():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    cases = {"baseline": _encoded(image, format="JPEG"),
             "baseline with exif and a big icc profile": _encoded(image, format="JPEG", exif=b"Exif\0\0" + bytes(40),
                                                                   icc_profile=bytes(70_000)),
             "4:4:4": _encoded(image, format="JPEG", quality=100, subsampling=0),
             "progressive": _encoded(image, format="JPEG", progressive=True),
             "cmyk": _encoded(image.convert("CMYK"), format="JPEG"),
             "grayscale": _encoded(image.convert("L"), format="JPEG"),
             "png": _encoded(image, format="PNG")}
    cases["truncated"] = cases["baseline"][:200]
    for name, data in cases.items():
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                plain = img.format == "JPEG" and img.mode == "RGB" and not img.info.get("progressive")
        except OSError:
            plain = False
        assert pixels._plain_jpeg(data) == plain, name


def test_file_bytes_are_read_ahead_in_order_and_an_early_stop_leaves_no_thread():
    import threading

    from crossgate.extraction import _read_in_threads

    class Items:
        def __len__(self):
            return 101

        def __getitem__(self, j):
            return j

    assert list(_read_in_threads(Items(), threads=3, group=8, ahead=2)) == list(range(101))
    reader = _read_in_threads(Items(), threads=3, group=8, ahead=2)
    assert [next(reader) for _ in range(5)] == [0, 1, 2, 3, 4]
    reader.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("crossgate-read")]
