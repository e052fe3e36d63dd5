"""Sample sets of labelled photos that a fresh clone downloads: one archive, checked, cached.

``make photos`` with no folder of its own trains on the raccoon set (MIT licence): 200 web
photos of raccoons with LabelImg's VOC XML, from the public repository
``datitran/raccoon_dataset`` pinned at one commit. The set is used in its upstream layout
(``images/raccoon-N.jpg`` beside ``annotations/raccoon-N.xml``), which
:mod:`dataset.photo_folder` reads as it stands: nothing is converted.

:func:`fetch_sample` downloads the archive once (a progress bar on stderr), takes from it only
the files of the sample's manifest (``dataset/samples/<name>.sha256``, one ``sha256  path``
line a file), checks every one against its sum, and unpacks them into a temporary folder
beside the target that is renamed into place only when all of them passed. A second call finds
the folder and downloads nothing. Whatever fails (no network, a server that refuses, an
archive that is not one, a file with the wrong sum) raises :class:`SampleError` with one line
naming the URL or the file and what to pass instead, and leaves nothing half-written behind.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

MANIFESTS = Path(__file__).resolve().parent / "samples"
# What a user passes instead of the sample (the error messages say it).
INSTEAD = "pass a folder of your own labelled photos instead: make photos PHOTOS=folder"


class SampleError(RuntimeError):
    """The sample could not be had; the message is one line for the user."""


@dataclass(frozen=True)
class Sample:
    """A downloadable sample set.

    ``url`` is an archive (``.tar.gz`` or ``.zip``) whose files sit under one top folder, as
    GitHub's archives of a commit do; ``manifest`` lists the files used, relative to that folder.
    """

    name: str
    url: str
    manifest: Path
    about: str           # written to README.txt in the unpacked folder: where it came from

    def expected(self) -> dict[str, str]:
        """``{relative path: sha256}`` from the manifest file."""
        return read_manifest(self.manifest)


RACCOON_COMMIT = "93938849301895fb73909842ba04af9b602f677a"
SAMPLES = {
    "raccoon": Sample(
        name="raccoon",
        url=f"https://github.com/datitran/raccoon_dataset/archive/{RACCOON_COMMIT}.tar.gz",
        manifest=MANIFESTS / "raccoon.sha256",
        about=("raccoon: 200 photos of raccoons with LabelImg VOC XML, one class.\n"
               "Source: github.com/datitran/raccoon_dataset at commit "
               f"{RACCOON_COMMIT} (MIT licence, Copyright (c) Dat Tran).\n"
               "Only images/ and annotations/ are kept; each file matched its sha256 "
               "(dataset/samples/raccoon.sha256).\n")),
}


def read_manifest(path: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of a ``sha256sum``-style file (``HEX  path`` lines).

    Raises
    ------
    ValueError
        A line is not a 64-digit sum and a relative path inside the set.
    """
    entries = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        parts = Path(rel).parts
        if len(digest) != 64 or not rel or Path(rel).is_absolute() or ".." in parts:
            raise ValueError(f"{path}:{number}: expected 'SHA256  relative/path', got {line!r}")
        entries[rel] = digest.lower()
    return entries


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(url: str, timeout: float) -> bytes:
    """The archive's bytes, with a progress bar; :class:`SampleError` on any failure."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "mxnet-ssd-cli sample fetch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            chunks = io.BytesIO()
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {os.path.basename(url)}", file=sys.stderr,
                      leave=False) as bar:
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    chunks.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        err.close()                     # the error holds the response and its socket
        raise SampleError(f"download of {url} failed: HTTP {err.code} {err.reason}; "
                          f"{INSTEAD}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise SampleError(f"cannot download {url} ({reason}): no network? {INSTEAD}") from None
    data = chunks.getvalue()
    if total is not None and len(data) != total:
        raise SampleError(f"download of {url} ended after {len(data)} of {total} bytes; "
                          f"run it again, or {INSTEAD}")
    return data


def _archive_members(data: bytes, url: str) -> dict[str, bytes]:
    """``{path below the archive's top folder: bytes}`` of every regular file in it."""
    files: dict[str, bytes] = {}
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        files[info.filename] = archive.read(info)
        else:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                for member in archive.getmembers():
                    if member.isfile():
                        files[member.name] = archive.extractfile(member).read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SampleError(f"{url} is not a readable .tar.gz or .zip archive ({first_line}); "
                          f"{INSTEAD}") from None
    # GitHub's archives hold everything under one folder (<repo>-<commit>/): strip it.
    tops = {name.split("/", 1)[0] for name in files}
    if len(tops) == 1 and all("/" in name for name in files):
        files = {name.split("/", 1)[1]: content for name, content in files.items()}
    return files


def fetch_sample(name: str, data_dir: str | os.PathLike = "data", url: str | None = None,
                 timeout: float = 60.0, log=print) -> Path:
    """The folder of sample ``name`` under ``data_dir``, downloaded and checked if not there.

    Parameters
    ----------
    name : str
        A key of ``SAMPLES``.
    data_dir : path
        Where sample folders live (``data/`` of the repository by default).
    url : str, optional
        Another address of the same archive (a mirror; the tests' local server).
    timeout : float
        Seconds without an answer before the download gives up.
    log : callable
        Where the one-line messages go.

    Raises
    ------
    ValueError
        Unknown sample name.
    SampleError
        The download or a check failed (one line: the URL or the file, and what to do).
    """
    if name not in SAMPLES:
        raise ValueError(f"--sample {name!r}: valid: {', '.join(sorted(SAMPLES))}")
    sample = SAMPLES[name]
    expected = sample.expected()
    target = Path(data_dir) / name
    if target.is_dir():
        missing = [rel for rel in expected if not (target / rel).is_file()]
        if not missing:
            log(f"sample {name}: using {target} (downloaded before; nothing to fetch)")
            return target
        raise SampleError(f"{target} exists but lacks {len(missing)} of the sample's files "
                          f"(e.g. {missing[0]}): remove the folder to download it again, "
                          f"or {INSTEAD}")
    url = url or sample.url
    log(f"sample {name}: downloading {url} (once; kept in {target})")
    files = _archive_members(_download(url, timeout), url)
    for rel, digest in expected.items():
        if rel not in files:
            raise SampleError(f"{url}: the archive has no {rel}; {INSTEAD}")
        if sha256_bytes(files[rel]) != digest:
            raise SampleError(f"{url}: {rel} fails its sha256 check ({sample.manifest.name}); "
                              f"{INSTEAD}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        for rel in expected:
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(files[rel])
        (staging / "README.txt").write_text(sample.about)
        os.rename(staging, target)      # atomic: the folder appears whole or not at all
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise SampleError(f"cannot write the sample to {target}: {err}") from None
    log(f"sample {name}: {len(expected)} files checked and unpacked into {target}")
    return target
