"""Lin et al.'s published few-shot splits, read through a data root laid out as CoOp's.

The reference files live in ../shared/fixtures (CI has them beside the clone); a test links them into a
temporary data root and never copies them into the repository.
"""
import json

import pytest

from crossgate.cli import main
from crossgate.datasets import load_dataset, read_index_file
from crossgate.errors import UserError
from crossgate.settings import Settings

from .conftest import LIN_FIXTURES

pytestmark = pytest.mark.skipif(not LIN_FIXTURES.is_dir(),
                                reason=f"reference split files not found at {LIN_FIXTURES} (CI has them)")
SHOTS, SEEDS = (1, 2, 4, 8, 16), (1, 2, 3)


@pytest.fixture()
def data_root(tmp_path):
    (tmp_path / "oxford_pets").mkdir()
    (tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").symlink_to(
        LIN_FIXTURES / "splits" / "split_zhou_OxfordPets.json")
    (tmp_path / "indices").mkdir()
    (tmp_path / "indices" / "oxford_pets").symlink_to(LIN_FIXTURES / "indices" / "oxford_pets")
    return tmp_path


def published_train_images(dataset, shots, seed):
    data = json.loads((LIN_FIXTURES / "indices" / dataset / f"shot_{shots}-seed_{seed}.json").read_text())
    return [e["impath"].split("/images/", 1)[1] for e in data["train"]["data"]]


@pytest.mark.parametrize("shots", SHOTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_split_show_prints_exactly_the_published_images(capsys, data_root, shots, seed):
    code = main(["split", "show", "oxford_pets", "--shots", str(shots), "--seed", str(seed),
                 "--data-root", str(data_root)])
    out, err = capsys.readouterr()
    assert code == 0 and f"from published:shot_{shots}-seed_{seed}.json" in err
    assert out.splitlines() == published_train_images("oxford_pets", shots, seed)
    assert len(out.splitlines()) == 37 * shots


def test_pets_classes_and_template_are_lins(data_root):
    pets = load_dataset("oxford_pets", Settings(data_root=data_root))
    assert len(pets.classnames) == 37 and pets.classnames[0] == "abyssinian"
    assert "american bulldog" in pets.classnames  # '_' -> ' '
    assert pets.templates == ["a photo of a {}, a type of pet."]
    assert [len(pets.split(s)) for s in ("train", "val", "test")] == [2944, 736, 3669]


def test_published_validation_has_min_shots_4_per_class(data_root):
    pets = load_dataset("oxford_pets", Settings(data_root=data_root))
    train, val = pets.split("train"), pets.split("val")
    for shots in SHOTS:
        split = read_index_file(pets.index_dir / f"shot_{shots}-seed_1.json", train.paths, val.paths)
        assert len(split.val) == 37 * min(shots, 4) and len(split.train) == 37 * shots


@pytest.mark.parametrize("shots", SHOTS)
def test_food101_index_files_read(shots):
    split = read_index_file(LIN_FIXTURES / "indices" / "food101" / f"shot_{shots}-seed_1.json")
    assert len(split.train) == 101 * shots and len(split.val) == 101 * min(shots, 4)


def test_index_file_of_another_split_is_refused(data_root):
    pets = load_dataset("oxford_pets", Settings(data_root=data_root))
    train, val = pets.split("train"), pets.split("val")
    shuffled = list(reversed(train.paths))
    with pytest.raises(UserError, match="does not belong to this split file"):
        read_index_file(pets.index_dir / "shot_4-seed_1.json", shuffled, val.paths)


def test_sampler_is_used_and_said_when_no_index_file(capsys, data_root):
    code = main(["split", "show", "oxford_pets", "--shots", "3", "--seed", "1", "--data-root", str(data_root)])
    out, err = capsys.readouterr()
    assert code == 0 and "from crossgate-sampler" in err and len(out.splitlines()) == 37 * 3


def test_missing_dataset_says_where_files_go(capsys, tmp_path):
    code = main(["split", "show", "food101", "--shots", "4", "--seed", "1", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path}/food-101/split_zhou_Food101.json" in err and len(err.splitlines()) == 1
