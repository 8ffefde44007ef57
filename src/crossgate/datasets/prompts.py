"""Description banks: several sentences per class in place of the dataset's templates.

The format is CuPL's (Pratt et al., ICCV 2023), `{class name: [sentence, ...]}`, which APE, TIMO and SuS-X
read too. `--prompts cupl` downloads the CuPL file published for a CoOp dataset (data/downloads.json, key
"cupl": pinned by URL and checksum; the sentences are never shipped, their source has no licence);
`--prompts FILE.json` reads a file of your own. Every method that reads text then reads the bank: the
zero-shot classifier of a class is the mean of its descriptions (CuPL's "full" recipe: descriptions only,
no templates added), and the gate's pool is every description.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..jsonio import BadJSON, read_json

CHOICES = ("templates", "cupl")  # or a path to a .json file


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def read_bank(path: Path) -> dict[str, list[str]]:
    """The bank in a JSON file, after checking its whole shape: an object of class name -> a non-empty
    list of non-empty sentences."""
    path = Path(path).expanduser()
    try:
        bank = read_json(path)
    except OSError as err:
        raise UserError(f"cannot read the description bank {path} ({err.strerror or err}); check the path "
                        "(--prompts FILE.json)") from None
    except BadJSON as err:
        raise UserError(f"{path} is not valid JSON ({err}); a description bank is {{class name: [sentence, "
                        "...]}}") from None
    if not isinstance(bank, dict) or not bank:
        raise UserError(f"{path} must be a JSON object {{class name: [sentence, ...]}}, got "
                        f"{type(bank).__name__ if bank else 'an empty one'}")
    for name, sentences in bank.items():
        if not (isinstance(sentences, list) and sentences and all(isinstance(s, str) and s.strip()
                                                                  for s in sentences)):
            raise UserError(f"{path}: class {name!r} must map to a non-empty list of non-empty sentences, got "
                            f"{sentences!r:.80}")
    return bank


def bank_prompts(bank: dict[str, list[str]], classnames: list[str], source: str) -> tuple[list[str], np.ndarray]:
    """Every description of every class, in class order, and the class of each. Class names match the
    bank's keys ignoring case, '_' and repeated spaces; classes the bank lacks are an error, extra keys
    are ignored (a bank may cover more classes than the dataset)."""
    by_key = {}
    for name, sentences in bank.items():
        if _key(name) in by_key:
            raise UserError(f"{source}: classes {name!r} and another name the same class once case and '_' are "
                            "ignored; keep one")
        by_key[_key(name)] = sentences
    missing = [c for c in classnames if _key(c) not in by_key]
    if missing:
        raise UserError(f"{source} has no descriptions of {len(missing)} class(es) ({', '.join(map(repr, missing[:3]))}"
                        f"{', ...' if len(missing) > 3 else ''}); it names {', '.join(map(repr, list(bank)[:3]))}"
                        f"{', ...' if len(bank) > 3 else ''}: add them, or use --prompts templates")
    texts = [s.strip() for c in classnames for s in by_key[_key(c)]]
    labels = np.concatenate([np.full(len(by_key[_key(c)]), i) for i, c in enumerate(classnames)]).astype(np.int64)
    return texts, labels


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
