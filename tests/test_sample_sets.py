"""The sample set a fresh clone downloads (dataset/sample_sets.py, `make photos` with no PHOTOS=).

Every download here goes to a local HTTP server on 127.0.0.1 that serves archives built by the
test: a miniature set made of generated files, and, where ``../shared/data/raccoon`` exists, the
raccoon photos and XML in their upstream layout (the files the real archive holds, byte for
byte). No test reaches outside the machine.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from dataset import sample_sets
from dataset.sample_sets import Sample, SampleError, fetch_sample, read_manifest

REPO = Path(__file__).resolve().parent.parent
RACCOON_VOC = REPO.parent / "shared" / "data" / "raccoon" / "VOCdevkit" / "VOC2007"
TOP = "raccoon_dataset-93938849301895fb73909842ba04af9b602f677a"


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:      # keep the test output clean
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """(folder served, base URL, list of request paths) of a server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", httpd.requests
    httpd.shutdown()
    httpd.server_close()


def refused_url() -> str:
    """An address on 127.0.0.1 where nothing listens (a port bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/archive.tar.gz"


def write_archive(path: Path, files: dict[str, bytes], kind: str = "tar.gz") -> None:
    """An archive holding ``files`` under one top folder, as GitHub's commit archives do."""
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            for rel, data in files.items():
                archive.writestr(f"{TOP}/{rel}", data)
        return
    with tarfile.open(path, "w:gz") as archive:
        for rel, data in files.items():
            info = tarfile.TarInfo(f"{TOP}/{rel}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture
def mini(tmp_path, monkeypatch):
    """A miniature sample: three generated files in the manifest, and one extra file the
    archive holds that the manifest does not list (as the real repository has scripts)."""
    files = {"images/a-1.jpg": b"\xff\xd8photo one", "images/a-2.jpg": b"\xff\xd8photo two",
             "annotations/a-1.xml": b"<annotation></annotation>"}
    manifest = tmp_path / "mini.sha256"
    manifest.write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {rel}\n"
                                for rel, d in files.items()))
    sample = Sample("mini", "http://127.0.0.1:9/unused.tar.gz", manifest, "mini sample\n")
    monkeypatch.setitem(sample_sets.SAMPLES, "mini", sample)
    archive_files = dict(files, **{"generate_tfrecord.py": b"print('not used')\n"})
    return archive_files, files


def leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_download_checks_unpacks_and_caches(tmp_path, server, mini, kind):
    root, base, requests = server
    archive_files, files = mini
    write_archive(root / f"mini.{kind}", archive_files, kind)
    data_dir = tmp_path / "data"
    messages = []
    folder = fetch_sample("mini", data_dir, f"{base}/mini.{kind}", log=messages.append)
    assert folder == data_dir / "mini"
    for rel, data in files.items():
        assert (folder / rel).read_bytes() == data
    assert not (folder / "generate_tfrecord.py").exists(), "only the manifest's files are kept"
    assert (folder / "README.txt").read_text() == "mini sample\n"
    assert leftovers(data_dir) == ["mini"], "no temporary folder is left beside the set"
    assert requests == [f"/mini.{kind}"]
    assert "3 files checked" in messages[-1]
    # a second run downloads nothing
    assert fetch_sample("mini", data_dir, f"{base}/mini.{kind}", log=messages.append) == folder
    assert requests == [f"/mini.{kind}"]
    assert "nothing to fetch" in messages[-1]


def test_a_file_that_fails_its_checksum_leaves_nothing_behind(tmp_path, server, mini):
    root, base, requests = server
    archive_files, _ = mini
    archive_files["images/a-2.jpg"] = b"\xff\xd8photo two, changed"
    write_archive(root / "mini.tar.gz", archive_files)
    data_dir = tmp_path / "data"
    with pytest.raises(SampleError) as err:
        fetch_sample("mini", data_dir, f"{base}/mini.tar.gz", log=lambda _: None)
    message = str(err.value)
    assert "images/a-2.jpg fails its sha256 check" in message and base in message
    assert "make photos PHOTOS=folder" in message and "\n" not in message
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("case", ["refused", "missing", "not an archive", "file missing"])
def test_download_failures_name_the_url_and_what_to_pass_instead(tmp_path, server, mini, case):
    root, base, _ = server
    archive_files, _ = mini
    url = {"refused": refused_url(), "missing": f"{base}/nothing-here.tar.gz"}.get(
        case, f"{base}/mini.tar.gz")
    if case == "not an archive":
        (root / "mini.tar.gz").write_bytes(b"<html>a login page, not an archive</html>")
    if case == "file missing":
        del archive_files["annotations/a-1.xml"]
        write_archive(root / "mini.tar.gz", archive_files)
    data_dir = tmp_path / "data"
    with pytest.raises(SampleError) as err:
        fetch_sample("mini", data_dir, url, timeout=10, log=lambda _: None)
    message = str(err.value)
    assert url in message and "make photos PHOTOS=folder" in message and "\n" not in message
    expected = {"refused": "cannot download", "missing": "HTTP 404",
                "not an archive": "not a readable", "file missing": "no annotations/a-1.xml"}
    assert expected[case] in message
    assert leftovers(data_dir) == []


def test_a_partial_folder_is_not_taken_for_the_sample(tmp_path, mini):
    (tmp_path / "data" / "mini" / "images").mkdir(parents=True)
    with pytest.raises(SampleError, match="lacks 3 of the sample's files"):
        fetch_sample("mini", tmp_path / "data", "http://127.0.0.1:9/x.tar.gz", log=lambda _: None)


def test_unknown_sample_and_bad_manifest_lines(tmp_path):
    with pytest.raises(ValueError, match="--sample 'nope': valid: raccoon"):
        fetch_sample("nope", tmp_path)
    bad = tmp_path / "bad.sha256"
    bad.write_text("1234  ../outside.jpg\n")
    with pytest.raises(ValueError, match=r"bad.sha256:1: expected 'SHA256  relative/path'"):
        read_manifest(bad)


def test_the_raccoon_manifest_is_the_upstream_layout():
    manifest = read_manifest(sample_sets.SAMPLES["raccoon"].manifest)
    assert len(manifest) == 400
    assert {rel.split("/")[0] for rel in manifest} == {"images", "annotations"}
    stems = {Path(rel).stem for rel in manifest}
    assert stems == {f"raccoon-{n}" for n in range(1, 201)}


def _raccoon_upstream_files() -> dict[str, bytes]:
    if not RACCOON_VOC.is_dir():
        pytest.skip(f"real-photo data not found at {RACCOON_VOC}")
    files = {f"images/{p.name}": p.read_bytes() for p in (RACCOON_VOC / "JPEGImages").iterdir()}
    files.update({f"annotations/{p.name}": p.read_bytes()
                  for p in (RACCOON_VOC / "Annotations").iterdir()})
    files["README.md"] = b"# Raccoon Detector Dataset\n"         # upstream has more than the set
    files["data/train_labels.csv"] = b"filename,width,height,class,xmin,ymin,xmax,ymax\n"
    return files


def test_the_raccoon_archive_passes_the_manifest(tmp_path, server):
    """The manifest was computed from the same files; every one of them checks."""
    root, base, requests = server
    write_archive(root / f"{TOP}.tar.gz", _raccoon_upstream_files())
    folder = fetch_sample("raccoon", tmp_path / "data", f"{base}/{TOP}.tar.gz", log=lambda _: None)
    assert len(list((folder / "images").glob("*.jpg"))) == 200
    assert len(list((folder / "annotations").glob("*.xml"))) == 200
    assert not (folder / "data").exists()
    assert requests == [f"/{TOP}.tar.gz"]


def test_train_photos_sample_without_a_network_is_one_error_line(tmp_path):
    url = refused_url()
    proc = subprocess.run([sys.executable, "tools/train_photos.py", "--sample", "raccoon",
                           "--sample-url", url, "--data-dir", str(tmp_path / "data"),
                           "--workdir", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and url in errors[0] and "make photos PHOTOS=folder" in errors[0]
    assert "Traceback" not in proc.stderr
    assert leftovers(tmp_path / "data") == []


def test_train_photos_takes_one_source_of_photos(tmp_path):
    proc = subprocess.run([sys.executable, "tools/train_photos.py", str(tmp_path),
                           "--sample", "raccoon"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "give the labelled photos once" in proc.stderr


USER_FACING = ["README.md", "Makefile", *sorted(str(p.relative_to(REPO))
                                                for p in (REPO / "docs").rglob("*.md"))]


@pytest.mark.parametrize("path", USER_FACING)
def test_no_user_facing_text_names_our_own_data_folder(path):
    """Users have no ../shared: the README, the docs and the Makefile never send them there."""
    assert "../shared" not in (REPO / path).read_text()


def test_no_help_text_names_our_own_data_folder():
    for script in ("tools/train_photos.py", "tools/prepare_dataset.py", "train.py"):
        out = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True,
                             text=True, timeout=120, env=dict(os.environ, COLUMNS="200"))
        assert out.returncode == 0 and "../shared" not in out.stdout, script
