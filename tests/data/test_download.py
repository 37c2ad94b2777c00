"""Downloads against a local HTTP server (127.0.0.1, port 0) that honours Range requests."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from wsolbench.data import catalog, cub, download as dl, tinyimagenet
from wsolbench.data.catalog import Source
from wsolbench.errors import UserError


class _Server:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_first: set[str] = set()  # send half, then hang up, once per file
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("?")[0]
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if name not in server.files:
                    self.send_error(404, "Not Found")
                    return
                data = server.files[name]
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in server.cut_first:
                    server.cut_first.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _tgz(folder: Path, arcname: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(folder, arcname=arcname)
    return buf.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _quiet(_msg: str) -> None:
    pass


# --------------------------------------------------------------------------- fetch


def test_fetch_whole_file(server, tmp_path):
    server.files["a.bin"] = bytes(range(256)) * 1000
    out = dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin", log=_quiet)
    assert out.read_bytes() == server.files["a.bin"]
    assert not (tmp_path / "a.bin.part").exists()


def test_fetch_resumes_a_part_file(server, tmp_path):
    data = bytes(range(256)) * 1000
    server.files["a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data[:100_000])
    dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin", log=_quiet)
    assert (tmp_path / "a.bin").read_bytes() == data
    assert server.requests == [("a.bin", "bytes=100000-")]


def test_fetch_recovers_from_a_broken_transfer(server, tmp_path):
    data = bytes(range(256)) * 4000
    server.files["a.bin"] = data
    server.cut_first.add("a.bin")
    dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin", log=_quiet)
    assert (tmp_path / "a.bin").read_bytes() == data
    assert server.requests[0] == ("a.bin", None)
    assert server.requests[1][1] is not None and server.requests[1][1].startswith("bytes=")
    assert len(server.requests) == 2


def test_fetch_restarts_when_server_ignores_range(server, tmp_path):
    data = b"0123456789" * 5000
    server.files["a.bin"] = data
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(b"garbage" * 10)
    dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin", log=_quiet)
    assert (tmp_path / "a.bin").read_bytes() == data


def test_fetch_complete_part_and_416(server, tmp_path):
    data = b"x" * 1000
    server.files["a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data)
    dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin", log=_quiet)
    assert (tmp_path / "a.bin").read_bytes() == data


def test_fetch_dead_link_and_offline(server, tmp_path):
    with pytest.raises(dl.DownloadError, match=r"HTTP 404"):
        dl.fetch(f"{server.url}/missing.tgz", tmp_path / "m.tgz", log=_quiet)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(dl.DownloadError, match=r"cannot reach"):
        dl.fetch(f"http://127.0.0.1:{port}/x.tgz", tmp_path / "x.tgz", log=_quiet, retries=1)


def test_mirror_argument_and_environment(monkeypatch):
    src = Source("CUB_200_2011.tgz", "https://example.org/CUB_200_2011.tgz?download=1")
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    assert dl.source_url(src) == src.url
    monkeypatch.setenv(dl.MIRROR_ENV, "http://mirror.local/data/")
    assert dl.source_url(src) == "http://mirror.local/data/CUB_200_2011.tgz"
    assert dl.source_url(src, "http://other") == "http://other/CUB_200_2011.tgz"
    assert dl.source_url(Source("x.mat", None), "http://m") == "http://m/x.mat"


# --------------------------------------------------------------------------- datasets


def _serve_cub(server, make_cub, monkeypatch, *, md5_ok=True, seg_md5_known=True):
    mini = make_cub("src")
    server.files["CUB_200_2011.tgz"] = _tgz(mini.folder, "CUB_200_2011")
    server.files["segmentations.tgz"] = _tgz(mini.root / "segmentations", "segmentations")
    real = catalog.dataset_info("cub")
    main, seg = real.sources
    sources = (dataclasses.replace(main, md5=_md5(server.files["CUB_200_2011.tgz"]) if md5_ok
                                   else "0" * 32),
               dataclasses.replace(seg, md5=_md5(server.files["segmentations.tgz"])
                                   if seg_md5_known else None))
    monkeypatch.setitem(catalog._INFOS, "cub", dataclasses.replace(real, sources=sources))
    return mini


def test_real_sources_are_declared():
    cub_info = catalog.dataset_info("cub")
    assert cub_info.sources[0].md5 == "97eceeb196236b17998738112f37df78"
    assert cub_info.sources[0].url.startswith("https://data.caltech.edu/")
    assert catalog.dataset_info("tinyimagenet").sources[0].url == \
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    fl = {s.filename: s for s in catalog.dataset_info("flowers").sources}
    assert set(fl) == {"102flowers.tgz", "imagelabels.mat", "setid.mat", "102segmentations.tgz"}
    assert all(s.url.startswith("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/")
               for s in fl.values())
    for info in catalog.dataset_infos():
        for s in info.sources:
            for digest, n in ((s.md5, 32), (s.sha256, 64)):
                assert digest is None or (len(digest) == n and int(digest, 16) >= 0)


def test_download_cub_end_to_end(server, make_cub, monkeypatch, tmp_path, capsys):
    mini = _serve_cub(server, make_cub, monkeypatch, seg_md5_known=False)
    root = tmp_path / "data"
    out = dl.download("cub", root, mirror=server.url)
    assert [o.status for o in out] == ["extracted", "extracted"]
    printed = capsys.readouterr().out
    assert f"computed md5 {_md5(server.files['segmentations.tgz'])}" in printed  # unknown checksum
    assert "verified CUB_200_2011.tgz" in printed
    ds = cub.load(root)  # the same --root works for loading
    assert sum(len(v) for v in ds.splits.values()) == 12 and ds.has_masks("test")
    assert not (root / "CUB_200_2011.tgz").exists()  # archives removed after unpacking
    assert not list(root.glob(".unpacking-*"))
    n = len(server.requests)
    again = dl.download("cub", root, mirror=server.url, log=_quiet)
    assert [o.status for o in again] == ["present", "present"] and len(server.requests) == n
    assert mini.folder.exists()


def test_download_checksum_failure(server, make_cub, monkeypatch, tmp_path, capsys):
    _serve_cub(server, make_cub, monkeypatch, md5_ok=False)
    root = tmp_path / "data"
    with pytest.raises(UserError) as e:
        dl.download("cub", root, mirror=server.url)
    assert "1 of 2 files of CUB-200-2011 could not be obtained (CUB_200_2011.tgz)" in str(e.value)
    printed = capsys.readouterr().out
    assert "checksum mismatch" in printed and "md5 should be 000" in printed
    assert f"place it at {root / 'CUB_200_2011.tgz'}" in printed
    assert not (root / "CUB_200_2011.tgz").exists() and not (root / "CUB_200_2011").exists()
    assert (root / "segmentations").is_dir()


def test_offline_message_then_file_placed_by_hand(server, make_cub, monkeypatch, tmp_path, capsys):
    _serve_cub(server, make_cub, monkeypatch)
    data = server.files["CUB_200_2011.tgz"]
    real = catalog.dataset_info("cub")
    dead = tuple(dataclasses.replace(s, url=f"{server.url}/gone/{s.filename}") for s in real.sources)
    monkeypatch.setitem(catalog._INFOS, "cub", dataclasses.replace(real, sources=dead))
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    root = tmp_path / "data"
    with pytest.raises(UserError, match="2 of 2 files"):
        dl.download("cub", root)
    printed = capsys.readouterr().out
    assert "HTTP 404" in printed and "Get it by hand from" in printed
    assert f"place it at {root / 'CUB_200_2011.tgz'} (md5 {_md5(data)})" in printed
    # the user places both archives by hand; the next run verifies and unpacks them offline
    (root / "CUB_200_2011.tgz").write_bytes(data)
    (root / "segmentations.tgz").write_bytes(server.files["segmentations.tgz"])
    n = len(server.requests)
    out = dl.download("cub", root, log=_quiet)
    assert [o.status for o in out] == ["extracted", "extracted"] and len(server.requests) == n
    assert cub.load(root).has_masks("train")


def test_cars_images_have_no_public_url(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    info = catalog.dataset_info("cars")
    assert [s.url for s in info.sources[1:]] == [None, None, None]
    only_manual = dataclasses.replace(info, sources=info.sources[1:2])
    monkeypatch.setitem(catalog._INFOS, "cars", only_manual)
    with pytest.raises(UserError, match="could not be obtained"):
        dl.download("cars", tmp_path)
    printed = capsys.readouterr().out
    assert "cars_train.tgz: no working public address is known" in printed
    assert "065e5b463ae28d29e77c1b4b166cfe61" in printed and "Kaggle" in printed


def test_download_tiny_zip(server, make_tiny, monkeypatch, tmp_path):
    mini = make_tiny("src")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(mini.folder.rglob("*")):
            zf.write(p, str(Path("tiny-imagenet-200") / p.relative_to(mini.folder)))
    server.files["tiny-imagenet-200.zip"] = buf.getvalue()
    real = catalog.dataset_info("tinyimagenet")
    src = dataclasses.replace(real.sources[0], md5=_md5(buf.getvalue()))
    monkeypatch.setitem(catalog._INFOS, "tinyimagenet", dataclasses.replace(real, sources=(src,)))
    monkeypatch.setenv(dl.MIRROR_ENV, server.url)
    root = tmp_path / "tiny"
    dl.download("tinyimagenet", root, keep_archives=True, log=_quiet)
    assert (root / "tiny-imagenet-200.zip").is_file()
    assert len(tinyimagenet.load(root).splits["train"]) == 9


# --------------------------------------------------------------------------- safe extraction


def _evil_tar(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.tar"
    with tarfile.open(path, "w") as tf:
        ok = tarfile.TarInfo("fine/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        if kind == "dotdot":
            bad = tarfile.TarInfo("fine/../../escaped.txt")
            bad.size = 4
            tf.addfile(bad, io.BytesIO(b"evil"))
        elif kind == "absolute":
            bad = tarfile.TarInfo(str(tmp_path / "abs_escaped.txt"))
            bad.size = 4
            tf.addfile(bad, io.BytesIO(b"evil"))
        elif kind == "symlink":
            link = tarfile.TarInfo("fine/link")
            link.type = tarfile.SYMTYPE
            link.linkname = "../../.."
            tf.addfile(link)
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_extract_refuses_escaping_tar_members(tmp_path, kind):
    archive = _evil_tar(tmp_path, kind)
    dest = tmp_path / "out"
    with pytest.raises(dl.DownloadError, match="refusing"):
        dl.extract(archive, dest, log=_quiet)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "abs_escaped.txt").exists()
    assert not (dest / "fine").exists()  # nothing unpacked at all
    assert not list(dest.glob(".unpacking-*"))


def test_extract_refuses_escaping_zip_member(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.txt", "a")
        zf.writestr("../escaped.txt", "evil")
    with pytest.raises(dl.DownloadError, match="escaping"):
        dl.extract(archive, tmp_path / "out", log=_quiet)
    assert not (tmp_path / "escaped.txt").exists()


def test_extract_damaged_archive(tmp_path, make_cub):
    mini = make_cub("src")
    data = _tgz(mini.folder, "CUB_200_2011")
    archive = tmp_path / "cut.tgz"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(dl.DownloadError, match="damaged|neither"):
        dl.extract(archive, tmp_path / "out", log=_quiet)
    assert not (tmp_path / "out" / "CUB_200_2011").exists()
