import numpy as np
import pytest

from crossgate.datasets import SPLITS, load_dataset
from crossgate.datasets.idx import read_idx, write_idx
from crossgate.errors import UserError
from crossgate.settings import Settings
from tests.conftest import make_pets_like_root


def test_embedded_default_is_balanced_and_big_enough(embedded):
    counts = {s: np.bincount(embedded.split(s).labels, minlength=10) for s in SPLITS}
    assert len(embedded.classnames) == 10 and len(embedded.templates) >= 1
    assert counts["train"].min() >= 16 and len(set(counts["train"])) == 1
    assert counts["val"].min() >= 4 and counts["test"].min() >= 200 and counts["test"].sum() >= 2000
    image = embedded.split("test").load_image(0)
    assert image.mode == "RGB" and image.size == (28, 28)


def test_embedded_identity_is_stable(embedded):
    assert load_dataset("fashion-mnist").identity == embedded.identity


def test_prompts_cover_every_class_and_template(embedded):
    texts, labels = embedded.prompts()
    assert len(texts) == len(embedded.classnames) * len(embedded.templates)
    assert texts[0] == embedded.templates[0].format(embedded.classnames[0])
    assert np.bincount(labels).tolist() == [len(embedded.templates)] * len(embedded.classnames)


def _fake_fashion_mnist(folder, n_train=40, n_test=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_full_reads_from_data_root(tmp_path):
    _fake_fashion_mnist(tmp_path / "fashion-mnist")
    ds = load_dataset("fashion-mnist-full", Settings(data_root=tmp_path))
    sizes = {s: len(ds.split(s)) for s in SPLITS}
    assert sizes == {"train": 20, "val": 20, "test": 20}  # half of each tiny class held out for val


def test_full_missing_says_how_to_install(tmp_path, monkeypatch):
    import crossgate.datasets.fashion_mnist as fm

    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist-full", Settings(data_root=tmp_path))


@pytest.mark.skipif(not (__import__("pathlib").Path("/usr/share/datasets/fashion-mnist").is_dir()),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_full_from_debian_package(tmp_path):
    ds = load_dataset("fashion-mnist-full", Settings(data_root=tmp_path))
    assert sum(len(ds.split(s)) for s in SPLITS) == 70_000 and len(ds.split("test")) == 10_000


def test_idx_reader_rejects_truncated_and_foreign_files(tmp_path):
    write_idx(tmp_path / "a.gz", np.zeros((3, 2, 2)))
    assert read_idx(tmp_path / "a.gz").shape == (3, 2, 2)
    import gzip

    data = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "b").write_bytes(data[:-1])
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "c")




def test_pets_like_folder_runs_from_files_to_results(tmp_path, capsys):
    from crossgate.cli import main
    from crossgate.results import read_rows

    split, index = make_pets_like_root(tmp_path / "data")
    argv = ["bench", "--dataset", "oxford_pets", "--backbone", "tiny-clip", "--shots", "2,3", "--seeds", "1",
            "--methods", "zeroshot,logreg,tip", "--data-root", str(tmp_path / "data"), "--cache-dir",
            str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--no-progress", "--jobs", "1"]
    assert main(argv) == 0
    rows = read_rows(tmp_path / "run" / "results.jsonl")
    assert len(rows) == 6 and {r["dataset"] for r in rows} == {"oxford_pets"}
    sources = {r["shots"]: r["split_source"] for r in rows}
    assert sources == {2: "published:shot_2-seed_1.json", 3: "crossgate-sampler"}
    assert all(r["n_test"] == 15 and r["n_train"] == 3 * r["shots"] for r in rows)
    capsys.readouterr()
    assert main(["split", "show", "oxford_pets", "--shots", "2", "--seed", "1", "--data-root",
                 str(tmp_path / "data")]) == 0
    assert capsys.readouterr().out.splitlines() == [split["train"][i][0] for i in index["train"]["indices"]]


def test_missing_image_is_named(tmp_path):
    make_pets_like_root(tmp_path)
    (tmp_path / "oxford_pets" / "images" / "Bengal_test0.jpg").unlink()
    ds = load_dataset("oxford_pets", Settings(data_root=tmp_path))
    test = ds.split("test")
    with pytest.raises(UserError, match="missing image .*Bengal_test0.jpg"):
        test.load_image(test.paths.index("Bengal_test0.jpg"))


@pytest.mark.parametrize("name", ["caltech101", "oxford_flowers", "stanford_cars", "dtd", "eurosat", "sun397",
                                  "ucf101"])
def test_other_coop_datasets_read_their_layout(tmp_path, name):
    import json

    from PIL import Image

    from crossgate.datasets.coop import SPECS

    spec = SPECS[name]
    images = tmp_path / spec.folder / spec.images
    split = {s: [[f"class_{c}/{s}{i}.jpg", c, f"class_{c}"] for c in range(2) for i in range(2)]
             for s in ("train", "val", "test")}
    for items in split.values():
        for rel, c, _ in items:
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (100 * c, 0, 0)).save(images / rel)
    settings = Settings(data_root=tmp_path, offline=True)
    with pytest.raises(UserError, match=f"is missing {tmp_path / spec.folder / spec.split_file} "
                                        r"\(from https://raw.githubusercontent.com/linzhiqiu/cross_modal_adaptation/"):
        load_dataset(name, settings)  # offline: the split file's pinned download is named
    (tmp_path / spec.folder / spec.split_file).write_text(json.dumps(split))
    ds = load_dataset(name, settings)
    assert ds.classnames == ["class 0", "class 1"] and ds.templates == [spec.template]
    assert ds.index_dir == tmp_path / "indices" / name
    test = ds.split("test")
    assert test.paths[0] == "class_0/test0.jpg" and test.load_image(3).getpixel((0, 0)) == (100, 0, 0)
