"""Issue 21, first part: ImageNet and FGVC-Aircraft in the layouts Lin et al. read, and Lin et al.'s split and
index files in the downloads table, pinned to one commit."""
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from crossgate.errors import UserError
from crossgate.settings import Settings
from tests.conftest import run

VARIANTS = ["707-320", "727-200", "A300B4"]


def make_aircraft(root, per_split=(3, 2, 2)):
    folder = root / "fgvc_aircraft"
    (folder / "images").mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(VARIANTS) + "\n")
    image_id = 1000000
    for split, n in zip(("train", "val", "test"), per_split, strict=True):
        lines = []
        for c, variant in enumerate(VARIANTS):
            for _ in range(n):
                image_id += 1
                Image.new("RGB", (20, 16), (60 * c, 40, 90)).save(folder / "images" / f"{image_id}.jpg")
                lines.append(f"{image_id} {variant}")
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_aircraft_reads_the_official_lists(tmp_path):
    from crossgate.datasets import load_dataset

    folder = make_aircraft(tmp_path)
    ds = load_dataset("fgvc_aircraft", Settings(data_root=tmp_path, offline=True))
    assert ds.classnames == VARIANTS and ds.templates == ["a photo of a {}, a type of aircraft."]
    train = ds.split("train")
    assert len(train) == 9 and list(train.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    first = (folder / "images_variant_train.txt").read_text().split()[0]
    assert train.paths[0] == f"{first}.jpg" and train.load_image(0).size == (20, 16)
    assert len(ds.split("val")) == 6 and len(ds.split("test")) == 6


def test_aircraft_uses_a_published_index_file(tmp_path):
    from crossgate.datasets import choose_few_shot, load_dataset

    make_aircraft(tmp_path)
    ds = load_dataset("fgvc_aircraft", Settings(data_root=tmp_path, offline=True))
    train, val = ds.split("train"), ds.split("val")
    picks = {"train": [2, 5, 8], "val": [1, 3, 5]}
    index = {s: {"indices": picks[s], "data": [
        {"impath": f"./data/fgvc_aircraft/images/{ds.split(s).paths[i]}", "label": int(ds.split(s).labels[i]),
         "classname": VARIANTS[ds.split(s).labels[i]]} for i in picks[s]]} for s in picks}
    ds.index_dir.mkdir(parents=True)
    (ds.index_dir / "shot_1-seed_1.json").write_text(json.dumps(index))
    split = choose_few_shot(train.labels, val.labels, 1, 1, ds.classnames, ds.index_dir, train.paths, val.paths)
    assert list(split.train) == [2, 5, 8] and split.source == "published:shot_1-seed_1.json"


@pytest.mark.parametrize("edit,message", [
    (lambda f: (f / "variants.txt").unlink(), "fgvc-aircraft-2013b"),
    (lambda f: (f / "images_variant_val.txt").write_text("1000001 Concorde\n"), "line 1"),
    (lambda f: (f / "images_variant_train.txt").write_text("../../etc/passwd 707-320\n"), "line 1"),
])
def test_aircraft_layout_errors_are_one_line(tmp_path, edit, message):
    from crossgate.datasets import load_dataset

    edit(make_aircraft(tmp_path))
    with pytest.raises(UserError, match=message):
        load_dataset("fgvc_aircraft", Settings(data_root=tmp_path, offline=True))


def make_imagenet(root, wnids=("n01440764", "n01443537"), names=("tench", "goldfish")):
    folder = root / "imagenet"
    split = {"train": [], "val": [], "test": []}
    for label, (wnid, name) in enumerate(zip(wnids, names, strict=True)):
        for part, sub, n in (("train", "train", 3), ("val", "train", 1), ("test", "val", 2)):
            for i in range(n):
                rel = f"{sub}/{wnid}/{wnid}_{part}{i}.JPEG"
                (folder / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (24, 24), (100 * label, 50, 50)).save(folder / "images" / rel, format="JPEG")
                split[part].append([rel, label, name])
    (folder / "split_ImageNet.json").write_text(json.dumps(split))
    return folder


def test_imagenet_reads_lin_et_als_split_with_their_templates(tmp_path):
    from crossgate.datasets import load_dataset
    from crossgate.datasets.coop import IMAGENET_TEMPLATES

    make_imagenet(tmp_path)
    ds = load_dataset("imagenet", Settings(data_root=tmp_path, offline=True))
    assert ds.classnames == ["tench", "goldfish"] and ds.templates == list(IMAGENET_TEMPLATES)
    assert len(ds.templates) == 7 and "itap of a {}." in ds.templates
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [6, 2, 4]
    assert ds.split("test").paths[0].startswith("val/n01440764/")  # the official val set is the test split
    texts, labels = ds.prompts()
    assert len(texts) == 14 and texts[0] == "itap of a tench." and list(labels[:7]) == [0] * 7


def test_imagenet_without_its_split_file_says_where_it_goes(capsys, tmp_path):
    err = run(capsys, "split", "show", "imagenet", "--split", "test", "--data-root", str(tmp_path), "--offline")[2]
    assert "split_ImageNet.json" in err and "images/train" in err and len(err.strip().splitlines()) == 1


def test_datasets_lists_imagenet_and_aircraft(capsys):
    out = run(capsys, "datasets")[1]
    assert "imagenet " in out and "fgvc_aircraft " in out


def test_every_lin_file_is_pinned_to_one_commit():
    from importlib import resources

    from crossgate.datasets.download import remotes

    table = json.loads(resources.files("crossgate").joinpath("data/downloads.json").read_text())
    for name in table:
        if name.startswith("_"):
            continue
        files, indices = remotes(name)
        for r in [*files, *indices]:
            assert r.md5 or r.sha256 or r.git_blob or (r.no_checksum and "linzhiqiu" not in r.url), (name, r.path)
            if "linzhiqiu" in r.url:
                assert "/ac9077ee4e422f768c9b9109551468605e33ec9a/" in r.url, r.url
    for name in ("caltech101", "oxford_flowers", "stanford_cars", "dtd", "eurosat", "sun397", "ucf101",
                 "fgvc_aircraft", "imagenet"):
        files, indices = remotes(name)
        assert len(indices) == (25 if name == "imagenet" else 15), name
    assert {r.path for r in remotes("dtd")[0]} == {"dtd-r1.0.1.tar.gz", "dtd/split_zhou_DescribableTextures.json"}


def test_a_git_blob_pin_verifies_the_content(tmp_path):
    from crossgate.datasets.download import Remote, git_blob_id, verify

    data = np.random.default_rng(0).bytes(3000)
    (tmp_path / "f").write_bytes(data)
    expected = hashlib.sha1(b"blob 3000\0" + data).hexdigest()  # git hash-object, computed independently
    assert git_blob_id(tmp_path / "f") == expected
    assert verify(tmp_path / "f", Remote(url="u", path="f", git_blob=expected))
    assert not verify(tmp_path / "f", Remote(url="u", path="f", git_blob="0" * 40))
