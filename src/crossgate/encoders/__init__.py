from pathlib import Path

from ..errors import UserError
from . import lite, openclip  # noqa: F401  (registers backbones)
from .base import BACKBONES, Encoder
from .openclip import PREFIX as OPENCLIP_PREFIX


def create_encoder(name: str, cache_dir=None, device: str = "cpu", decode: str = "auto",
                   allow_files: bool = True) -> Encoder:
    """A registered backbone by name, or any open_clip model as openclip:<arch>/<pretrained>; `decode`
    picks how images become pixels (see crossgate.pixels). `cache_dir` (where a backbone keeps what it
    computes once, e.g. lite's text map; `~` expanded) defaults to $CROSSGATE_CACHE or ~/.cache/crossgate.
    `allow_files=False` for a name read from a file (model.json): then it never names a checkpoint to read."""
    from ..settings import default_cache_dir

    cache_dir = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    if name.startswith(OPENCLIP_PREFIX):
        return openclip.create_openclip(name, device=device, allow_files=allow_files).use_decode(decode)
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    return BACKBONES.create(name, cache_dir=cache_dir, device=device).use_decode(decode)


def list_backbones() -> list[str]:
    return BACKBONES.names() + [f"{OPENCLIP_PREFIX}<arch>/<pretrained>"]


__all__ = ["BACKBONES", "Encoder", "create_encoder", "list_backbones"]
