"""Build the embedded Fashion-MNIST subset shipped in src/crossgate/data/fashion_mnist from Debian's
dataset-fashion-mnist. Deterministic: rerunning it rewrites byte-identical files.

    apt-get install dataset-fashion-mnist && python scripts/make_embedded_fashion_mnist.py
"""
import json
from pathlib import Path

import numpy as np

from crossgate.datasets.fashion_mnist import DEBIAN_DIR, FILES
from crossgate.datasets.idx import read_idx, write_idx

PER_CLASS = {"train": 48, "val": 16, "test": 200}
OUT = Path(__file__).resolve().parents[1] / "src" / "crossgate" / "data" / "fashion_mnist"


def main():
    rng = np.random.default_rng(20261125)
    train_x, train_y = read_idx(DEBIAN_DIR / FILES["train"][0]), read_idx(DEBIAN_DIR / FILES["train"][1])
    test_x, test_y = read_idx(DEBIAN_DIR / FILES["test"][0]), read_idx(DEBIAN_DIR / FILES["test"][1])
    chosen = {"train": [], "val": [], "test": []}
    for c in range(10):
        pool = rng.permutation(np.flatnonzero(train_y == c))
        chosen["train"].append(np.sort(pool[: PER_CLASS["train"]]))
        chosen["val"].append(np.sort(pool[PER_CLASS["train"]: PER_CLASS["train"] + PER_CLASS["val"]]))
        chosen["test"].append(np.sort(rng.choice(np.flatnonzero(test_y == c), PER_CLASS["test"], replace=False)))
    OUT.mkdir(parents=True, exist_ok=True)
    provenance = {"source": "Fashion-MNIST (Zalando SE, MIT licence), Debian package dataset-fashion-mnist",
                  "per_class": PER_CLASS, "indices": {}}
    for split, parts in chosen.items():
        idx = np.concatenate(parts)
        x, y = (test_x, test_y) if split == "test" else (train_x, train_y)
        write_idx(OUT / f"{split}-images-idx3-ubyte.gz", x[idx])
        write_idx(OUT / f"{split}-labels-idx1-ubyte.gz", y[idx])
        provenance["indices"][split] = {"official_split": "test" if split == "test" else "train",
                                        "indices": idx.tolist()}
    (OUT / "PROVENANCE.json").write_text(json.dumps(provenance))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
