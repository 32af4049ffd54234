"""Where dataset files come from: the lookup order, checksums and verified downloads.

A dataset called ``name`` (``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``) is looked for, in order:

1. the explicit ``path`` argument (the CLI's ``--data-dir``): that folder itself, then ``path/<name>``;
2. ``$MINICNN_DATA/<name>``;
3. the user cache ``~/.cache/minicnn/<name>`` (``$XDG_CACHE_HOME/minicnn/<name>`` when that is set);
4. ``data/<name>`` of the project, when minicnn runs from a source checkout;
5. the system dataset folder ``/usr/share/datasets/<name>`` (where Debian's ``dataset-*`` packages
   install their files);
6. finally a download from the dataset's public mirrors into the user cache (``download=True``).

Every location is only a place to look: each file is verified against its published checksum
before use, so whichever location answers first, the data are the same.

Nothing here runs at import time; downloads happen only when a loader is called.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.request import Request, urlopen  # tests monkeypatch sources.urlopen

from .idx import DatasetFileError

SYSTEM_DATASETS = Path("/usr/share/datasets")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 30


class DatasetNotFoundError(FileNotFoundError):
    """No location holds the dataset's files and none could be downloaded.

    The message lists every place tried, in order, and says how to provide the files.
    """


class DownloadError(OSError):
    """Every mirror of a file failed; ``attempts`` holds one line per URL tried."""

    def __init__(self, attempts: list[str]):
        super().__init__("; ".join(attempts))
        self.attempts = list(attempts)


# --------------------------------------------------------------------------- locations


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/minicnn`` if set (and absolute, as XDG asks), else ``~/.cache/minicnn``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "minicnn"


def project_data_dir() -> Path | None:
    """``data/`` of the source checkout minicnn runs from, or None for an installed wheel."""
    # In an installed wheel parents[2] is site-packages: only trust it when it looks like the project.
    if (_PROJECT_ROOT / "pyproject.toml").is_file() and (_PROJECT_ROOT / "minicnn").is_dir():
        return _PROJECT_ROOT / "data"
    return None


def search_locations(name: str, path=None) -> list[tuple[Path | None, str]]:
    """The places looked in for dataset ``name``, in order, as ``(folder, label)`` pairs.

    ``folder`` is None for a location that is not configured (``$MINICNN_DATA`` unset), so that
    error messages can still say it was considered.
    """
    locations: list[tuple[Path | None, str]] = []
    if path is not None:
        given = Path(path).expanduser()
        locations.append((given, "path argument"))
        if given.name != name:
            locations.append((given / name, "path argument"))
    env = os.environ.get("MINICNN_DATA", "")
    locations.append((Path(env).expanduser() / name if env else None, "$MINICNN_DATA"))
    locations.append((user_cache_dir() / name, "user cache"))
    project = project_data_dir()
    if project is not None:
        locations.append((project / name, "source checkout"))
    locations.append((SYSTEM_DATASETS / name, "system datasets"))
    return locations


def find_dataset(
    title: str,
    name: str,
    path,
    probe: Callable[[Path], object],
    *,
    fetch: Callable[[Path], None] | None = None,
    download: bool = True,
    how_to: str = "",
):
    """Return what ``probe`` finds in the first location that has the dataset's files.

    ``probe(folder)`` returns the found files (any object) or a string saying what is missing.
    When no location has them and ``download`` is true, ``fetch(dest)`` downloads them into the
    user cache folder ``dest`` (raising DownloadError on failure) and the cache is probed again.
    Otherwise DatasetNotFoundError lists every place tried and how to provide the files.
    """
    tried = []
    for folder, label in search_locations(name, path):
        if folder is None:
            tried.append(f"{label}: not set")
            continue
        if not folder.exists():
            tried.append(f"{folder} ({label}): does not exist")
            continue
        found = probe(folder)
        if not isinstance(found, str):
            return found
        tried.append(f"{folder} ({label}): {found}")

    dest = user_cache_dir() / name
    if not download:
        tried.append("download: not attempted (download=False)")
    elif fetch is None:
        tried.append("download: no public mirror is known for this dataset")
    else:
        try:
            fetch(dest)
        except DownloadError as err:
            tried.append(f"download into {dest} failed:" + "".join(f"\n      {a}" for a in err.attempts))
        else:
            found = probe(dest)
            if not isinstance(found, str):
                return found
            tried.append(f"{dest} (after download): {found}")

    lines = [f"{title}: the dataset files were not found. Tried, in this order:"]
    lines += [f"  - {entry}" for entry in tried]
    lines.append(
        f"To provide the files: {how_to} Put them in any folder above, e.g. set "
        f"MINICNN_DATA=/some/folder and put them in /some/folder/{name}/, or give the folder "
        "explicitly (--data-dir DIR on the command line, path=DIR in Python). They are checked "
        "against the published checksums, so any copy of the official files works."
    )
    raise DatasetNotFoundError("\n".join(lines))


# --------------------------------------------------------------------------- checksums


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks (the file may be large)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_digest(data: bytes, algorithm: str, expected: str, what) -> None:
    """Raise DatasetFileError naming ``what`` when ``data`` does not hash to ``expected``."""
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected:
        raise DatasetFileError(
            f"{what}: checksum mismatch: {algorithm.upper()} is {actual}, expected {expected}; "
            "the file is corrupt, truncated or not the official one"
        )


def cache_key(*parts) -> str:
    """A stable SHA-256 over JSON-serialisable ``parts`` (source checksums, format versions...)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- downloads


def download_file(
    urls: Iterable[str],
    dest,
    verify: Callable[[Path], None],
    *,
    verbose: int = 1,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download the first URL that works into ``dest``; ``verify(tmp_path)`` must accept it.

    The bytes are streamed into a temporary file in ``dest``'s folder (same file system), which
    is renamed over ``dest`` only after ``verify`` passed (it raises DatasetFileError on a checksum
    mismatch). Whatever goes wrong, the temporary file is removed: a failed or interrupted
    download never leaves a partial file. Raises DownloadError listing every URL and its error.
    """
    dest = Path(dest)
    urls = list(urls)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError([f"cannot create {dest.parent}: {err}"]) from None
    attempts = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                _stream(url, out, dest.name, verbose, timeout)
                out.flush()
                os.fsync(out.fileno())
            verify(Path(tmp_name))
            os.replace(tmp_name, dest)
            return dest
        except (OSError, http.client.HTTPException, DatasetFileError) as err:
            # Report the URL, not the temporary file name, which the user never sees.
            attempts.append(f"{url}: {str(err).replace(tmp_name, dest.name)}")
        finally:
            # Also on KeyboardInterrupt: never leave a partial file behind.
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    raise DownloadError(attempts or ["no URL to download from"])


def _stream(url: str, out, label: str, verbose: int, timeout: float) -> None:
    """Copy the body of ``url`` into the open file ``out`` with a tqdm progress bar."""
    from tqdm.auto import tqdm  # imported here: only downloads need it

    request = Request(url, headers={"User-Agent": "minicnn (dataset download)"})
    with urlopen(request, timeout=timeout) as response:
        headers = getattr(response, "headers", None)
        length = headers.get("Content-Length") if headers is not None else None
        total = int(length) if length and str(length).isdigit() else None
        received = 0
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {label}",
            disable=not verbose, leave=False,
        ) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise DownloadError([f"incomplete download: got {received} of {total} bytes"])
