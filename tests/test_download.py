"""Downloads, served from a local HTTP server: first use fetches and extracts, resumes, verifies checksums,
refuses unsafe archives, and says which files to put where when offline."""
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import crossgate.datasets.download as dl
from crossgate.cli import main
from crossgate.errors import UserError
from crossgate.results import read_rows
from tests.conftest import make_pets_like_root


class Server:
    """Serves `files` (name -> bytes), honouring Range requests; records the Range headers it saw."""

    def __init__(self):
        self.files, self.ranges = {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = server.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if (header := self.headers.get("Range")) is not None:
                    server.ranges.append(header)
                    start = int(header.split("=")[1].rstrip("-"))
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self):
        self.httpd.shutdown()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


def _tar(entries) -> bytes:
    """A .tar.gz of (name, bytes or None for a folder, or ('symlink', target))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _publish_pets(server, tmp_path, monkeypatch):
    """Build a Pets-like dataset, serve it as the real one is published (images archive, split file, index
    files) and point crossgate's download table at the server."""
    src = tmp_path / "src"
    split, index = make_pets_like_root(src)
    images = sorted((src / "oxford_pets" / "images").iterdir())
    server.files["images.tar.gz"] = _tar([(f"images/{p.name}", p.read_bytes()) for p in images])
    server.files["split.json"] = (src / "oxford_pets" / "split_zhou_OxfordPets.json").read_bytes()
    server.files["shot_2-seed_1.json"] = (src / "indices" / "oxford_pets" / "shot_2-seed_1.json").read_bytes()

    def sha(name):
        return hashlib.sha256(server.files[name]).hexdigest()

    table = {"oxford_pets": {
        "files": [{"url": server.url + "images.tar.gz", "path": "oxford_pets/images.tar.gz",
                   "md5": hashlib.md5(server.files["images.tar.gz"]).hexdigest(), "extract_to": "oxford_pets",
                   "provides": "oxford_pets/images", "role": "images"},
                  {"url": server.url + "split.json", "path": "oxford_pets/split_zhou_OxfordPets.json",
                   "sha256": sha("split.json"), "role": "split"}],
        "indices": {"shot_2-seed_1.json": {"url": server.url + "shot_2-seed_1.json",
                                           "sha256": sha("shot_2-seed_1.json")}}}}
    monkeypatch.setattr(dl, "_table", lambda: table)
    monkeypatch.delenv("CROSSGATE_OFFLINE")
    return split, index, table


def test_first_use_downloads_split_indices_then_images(server, tmp_path, monkeypatch, capsys):
    split, index, _ = _publish_pets(server, tmp_path, monkeypatch)
    root = tmp_path / "data"
    assert main(["split", "show", "oxford_pets", "--shots", "2", "--seed", "1", "--data-root", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [split["train"][i][0] for i in index["train"]["indices"]]
    assert not (root / "oxford_pets" / "images").exists()  # listing a split needs no images
    argv = ["bench", "--dataset", "oxford_pets", "--backbone", "tiny-clip", "--shots", "2", "--seeds", "1",
            "--methods", "zeroshot,logreg", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "run"), "--no-progress", "--jobs", "1"]
    assert main(argv) == 0
    n_images = sum(len(split[s]) for s in ("train", "val", "test"))
    assert len(list((root / "oxford_pets" / "images").iterdir())) == n_images
    assert not (root / "oxford_pets" / "images.tar.gz").exists()  # extracted, then removed
    rows = read_rows(tmp_path / "run" / "results.jsonl")
    assert [r["split_source"] for r in rows] == ["published:shot_2-seed_1.json"] * 2


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    payload = bytes(range(256)) * 4000
    server.files["big.bin"] = payload
    remote = dl.Remote(url=server.url + "big.bin", path="big.bin", sha256=hashlib.sha256(payload).hexdigest())
    (tmp_path / "big.bin.part").write_bytes(payload[:300_000])  # what a killed first attempt left
    dl.download(remote, tmp_path / "big.bin", progress=False)
    assert server.ranges == ["bytes=300000-"]
    assert (tmp_path / "big.bin").read_bytes() == payload and not (tmp_path / "big.bin.part").exists()


def test_checksum_mismatch_deletes_the_download(server, tmp_path):
    server.files["f"] = b"tampered"
    remote = dl.Remote(url=server.url + "f", path="f", sha256="0" * 64)
    with pytest.raises(UserError, match="does not match its published checksum"):
        dl.download(remote, tmp_path / "f", progress=False)
    assert not (tmp_path / "f").exists() and not (tmp_path / "f.part").exists()


def test_unreachable_server_names_the_file_and_where_it_goes(tmp_path):
    remote = dl.Remote(url="http://127.0.0.1:9/nothing.tar.gz", path="x/nothing.tar.gz")
    with pytest.raises(UserError, match=f"offline\\? put that file at {tmp_path}/x/nothing.tar.gz"):
        dl.download(remote, tmp_path / "x" / "nothing.tar.gz", progress=False)


@pytest.mark.parametrize("member", [("../evil.txt", b"x"), ("/tmp/crossgate-evil.txt", b"x"),
                                    ("images/link", ("symlink", "/etc/passwd")), ("a/../../evil.txt", b"x")])
def test_unsafe_archive_members_are_refused_before_writing(tmp_path, member):
    archive = tmp_path / "crafted.tar.gz"
    archive.write_bytes(_tar([("images/ok.jpg", b"fine"), member]))
    with pytest.raises(UserError, match="unsafe member"):
        dl.safe_extract(archive, tmp_path / "into")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "into" / "images").exists()


def test_extracting_over_a_folder_keeps_files_already_there(tmp_path):
    (tmp_path / "into" / "food-101").mkdir(parents=True)
    (tmp_path / "into" / "food-101" / "split.json").write_text("{}")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar([("food-101/images/pie/1.jpg", b"jpg")]))
    dl.safe_extract(archive, tmp_path / "into")
    assert (tmp_path / "into" / "food-101" / "split.json").read_text() == "{}"
    assert (tmp_path / "into" / "food-101" / "images" / "pie" / "1.jpg").read_bytes() == b"jpg"


def test_offline_names_every_missing_file_and_its_source(tmp_path, capsys):
    code = main(["split", "show", "oxford_pets", "--shots", "1", "--seed", "1", "--data-root", str(tmp_path),
                 "--offline"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{tmp_path}/oxford_pets/split_zhou_OxfordPets.json (from https://raw.githubusercontent.com/" in err


def test_shipped_download_table_is_complete():
    table = json.loads((dl.resources.files("crossgate") / "data" / "downloads.json").read_text())
    for name in ("oxford_pets", "food101"):
        files, indices = dl.remotes(name)
        assert {f.role for f in files} == {"images", "split"} and all(f.md5 or f.sha256 or f.role == "split"
                                                                      for f in files)
        assert len(indices) == 15 and all(len(r.sha256) == 64 for r in indices)
    assert "_about" in table
