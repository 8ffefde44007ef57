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


PUBLIC_IMAGES = ("oxford_pets", "food101", "caltech101", "oxford_flowers", "dtd", "eurosat", "sun397", "ucf101",
                 "fgvc_aircraft")  # the CoOp datasets whose images are public; Cars, ImageNet and shifts: the user's


def test_shipped_download_table_is_complete():
    table = json.loads((dl.resources.files("crossgate") / "data" / "downloads.json").read_text())
    assert "_about" in table
    for name in PUBLIC_IMAGES:
        files, indices = dl.remotes(name)
        archives = [f for f in files if f.extract_to is not None]
        assert archives and dl.availability(name) == "downloads", name
        # every file is pinned by a checksum, or says why none exists (then it is checked by extracting it)
        assert all(f.md5 or f.sha256 or f.git_blob or f.no_checksum for f in files), name
        assert all(f.url.startswith("http") and f.provides for f in archives), name
        assert len(indices) == 15 and all(r.sha256 or r.git_blob for r in indices), name
    for name in ("stanford_cars",):
        assert dl.availability(name) == "split downloads"
    assert dl.availability("imagenet") == "index downloads"
    for name in ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "fashion-mnist"):
        assert dl.availability(name) == "local"


def test_crossgate_datasets_lists_the_eleven_and_the_shift_sets_with_what_first_use_fetches(capsys):
    assert main(["datasets"]) == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:] if line.strip()
             and not line.startswith("FIRST USE")}
    coop = ("oxford_pets", "food101", "caltech101", "oxford_flowers", "stanford_cars", "dtd", "eurosat", "sun397",
            "ucf101", "imagenet", "fgvc_aircraft")
    for name in (*coop, "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"):
        assert lines[name] in ("downloads", "split", "index", "local"), name
    assert all(lines[n] == "downloads" for n in PUBLIC_IMAGES)


def _zip(entries, symlink: str | None = None) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in entries:
            z.writestr(name, content)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)  # a symbolic link, as Unix zip records one
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_zip_archives_extract_and_unsafe_zip_members_are_refused(tmp_path):
    archive = tmp_path / "EuroSAT.zip"
    archive.write_bytes(_zip([("2750/Forest/1.jpg", b"a"), ("2750/River/2.jpg", b"b")]))
    dl.safe_extract(archive, tmp_path / "eurosat")
    assert (tmp_path / "eurosat" / "2750" / "River" / "2.jpg").read_bytes() == b"b"
    for bad in ([("../evil.txt", b"x")], [("/abs.txt", b"x")], [("a\\..\\..\\evil.txt", b"x")]):
        archive.write_bytes(_zip([("ok/1.jpg", b"a"), *bad]))
        with pytest.raises(UserError, match="unsafe member"):
            dl.safe_extract(archive, tmp_path / "into")
        assert not (tmp_path / "into" / "ok").exists() and not (tmp_path / "evil.txt").exists()
    archive.write_bytes(_zip([("ok/1.jpg", b"a")], symlink="ok/link"))
    with pytest.raises(UserError, match="unsafe member"):
        dl.safe_extract(archive, tmp_path / "into")
    archive.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="not a readable"):
        dl.safe_extract(archive, tmp_path / "into")


def test_an_archive_of_archives_and_a_subfolder_are_laid_out_as_coop_reads_them(server, tmp_path, monkeypatch):
    """Caltech101's zip holds caltech-101/101_ObjectCategories.tar.gz; Aircraft's tar holds
    fgvc-aircraft-2013b/data/, whose contents are the dataset folder."""
    inner = _tar([("101_ObjectCategories/face/1.jpg", b"face")])
    server.files["caltech-101.zip"] = _zip([("caltech-101/101_ObjectCategories.tar.gz", inner),
                                            ("caltech-101/show_annotation.m", b"%")])
    server.files["aircraft.tar.gz"] = _tar([("fgvc-aircraft-2013b/data/variants.txt", b"A\nB\n"),
                                            ("fgvc-aircraft-2013b/data/images/1.jpg", b"jpg"),
                                            ("fgvc-aircraft-2013b/README.html", b"x")])
    md5 = {n: hashlib.md5(server.files[n]).hexdigest() for n in server.files}
    table = {"caltech101": {"files": [{"url": server.url + "caltech-101.zip", "path": "caltech-101/caltech-101.zip",
                                       "md5": md5["caltech-101.zip"], "extract_to": "caltech-101",
                                       "extract_from": "caltech-101", "nested": ["101_ObjectCategories.tar.gz"],
                                       "provides": "caltech-101/101_ObjectCategories", "role": "images"}],
                            "indices": {}},
             "fgvc_aircraft": {"files": [{"url": server.url + "aircraft.tar.gz", "path": "aircraft.tar.gz",
                                          "no_checksum": "none published", "extract_to": "fgvc_aircraft",
                                          "extract_from": "fgvc-aircraft-2013b/data",
                                          "provides": "fgvc_aircraft/variants.txt", "role": "split"}],
                               "indices": {}}}
    monkeypatch.setattr(dl, "_table", lambda: table)
    root = tmp_path / "data"
    dl.ensure_files("caltech101", root, "images", progress=False)
    assert (root / "caltech-101" / "101_ObjectCategories" / "face" / "1.jpg").read_bytes() == b"face"
    assert not (root / "caltech-101" / "101_ObjectCategories.tar.gz").exists()
    assert not (root / "caltech-101" / "caltech-101.zip").exists()
    dl.ensure_files("fgvc_aircraft", root, "split", progress=False)
    assert sorted(p.name for p in (root / "fgvc_aircraft").iterdir()) == ["images", "variants.txt"]


def test_the_plain_tar_path_of_older_pythons_writes_files_and_folders(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar([("d/sub/1.jpg", b"one"), ("d/2.jpg", b"two")]))
    with tarfile.open(archive) as tar:
        dl._extract_plain(tar, tar.getmembers(), tmp_path / "out")
    assert (tmp_path / "out" / "d" / "sub" / "1.jpg").read_bytes() == b"one"
    assert (tmp_path / "out" / "d" / "2.jpg").read_bytes() == b"two"


def test_extraction_replaces_nothing_already_there_and_refuses_what_is_in_the_way(tmp_path):
    into = tmp_path / "into"
    (into / "food-101" / "images" / "pie").mkdir(parents=True)
    (into / "food-101" / "images" / "pie" / "1.jpg").write_bytes(b"yours")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar([("food-101/images/pie/1.jpg", b"archive"), ("food-101/images/pie/2.jpg", b"two")]))
    dl.safe_extract(archive, into)
    assert (into / "food-101" / "images" / "pie" / "1.jpg").read_bytes() == b"yours"
    assert (into / "food-101" / "images" / "pie" / "2.jpg").read_bytes() == b"two"
    (into / "dtd").write_text("a file of yours")
    archive.write_bytes(_tar([("dtd/images/x.jpg", b"x")]))
    with pytest.raises(UserError, match="in the way"):
        dl.safe_extract(archive, into)
    assert (into / "dtd").read_text() == "a file of yours"


def test_a_file_that_is_not_the_published_one_is_refused_and_a_verified_copy_is_kept(server, tmp_path,
                                                                                     monkeypatch):
    payload = _tar([("dtd/images/a/1.jpg", b"jpg")])
    server.files["dtd.tar.gz"] = payload
    entry = {"url": server.url + "dtd.tar.gz", "path": "dtd.tar.gz", "md5": hashlib.md5(payload).hexdigest(),
             "extract_to": ".", "provides": "dtd/images", "role": "images"}
    monkeypatch.setattr(dl, "_table", lambda: {"dtd": {"files": [entry], "indices": {}}})
    root = tmp_path / "data"
    root.mkdir()
    (root / "dtd.tar.gz").write_bytes(b"someone's other file")
    with pytest.raises(UserError, match="is not the file crossgate downloads there"):
        dl.ensure_files("dtd", root, "images", progress=False)
    assert (root / "dtd.tar.gz").read_bytes() == b"someone's other file"
    (root / "dtd.tar.gz").write_bytes(payload)  # a verified copy put there by hand: used, and left in place
    dl.ensure_files("dtd", root, "images", progress=False)
    assert (root / "dtd" / "images" / "a" / "1.jpg").read_bytes() == b"jpg" and (root / "dtd.tar.gz").is_file()
