"""Download, unpack and verify the GLUE and SuperGLUE data sets.

Usage::

    python download_data.py [--data_root DIR] [--task NAME|glue|superglue|all] [--force]
    python -m fine_tune.tasks.download ...

Each data set is the official zip (SuperGLUE ``BoolQ.zip``, ``CB.zip``..., GLUE ``QQP-clean.zip``, ``MNLI.zip``...;
GLUE's diagnostic is the file ``AX.tsv``). It unpacks into the data root (default ``<repo>/data/fine_tune``, env
``FT_DATA_ROOT``) as the archives do (``BoolQ/{train,val,test}.jsonl``, ``QQP/{train,dev,test}.tsv``, ...), the layout
:mod:`fine_tune.tasks.registry` reads. MRPC has no official zip and is not fetched.

Safe to re-run:

* a data set whose files are present with the expected number of data rows (:data:`SOURCES`) is left
  alone ("already present, verified") unless ``--force`` is given;
* the zip is downloaded to ``<data_root>/.tmp-<folder>.zip.part``, renamed when complete, and deleted
  after unpacking; a failed download leaves no partial file behind;
* only the expected files of the zip's top folder are extracted (``__MACOSX/``, ``QQP/original/`` and
  other extra members are ignored); a zip holding a member with an absolute path or ``..`` is refused
  (zip-slip); each file is written to a temporary file in its target folder and renamed over the target
  only once every expected file has been extracted, so a kill never leaves a truncated data file;
* after unpacking the row counts are verified; a mismatch is a :class:`DownloadError` naming the file
  and both counts.

Errors are one line: ``main`` prints ``error: <message>`` on stderr and returns 2.
Importing this module does nothing (no folders are created, nothing is downloaded).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import OneLineParser, UserError
from ..io_utils import honour_umask

if TYPE_CHECKING:
    from tqdm.auto import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TMP_PREFIX = ".tmp-"
CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadError(UserError):
    """Download, unpacking or verification failed; the message is one line (a :class:`UserError`)."""


@dataclass(frozen=True)
class DatasetSource:
    name: str  # "boolq", "qqp", "mnli", "ax"...
    url: str  # the official zip (or, with ``single_file``, the official file itself)
    folder: str  # top folder of the zip = sub-folder of the data root
    files: dict[str, int]  # file name (inside folder) -> expected number of data rows
    headerless: frozenset[str] = frozenset()  # .tsv files without a header line (CoLA's train and dev)
    single_file: bool = False  # the url is the one file of ``files`` (GLUE's AX.tsv), not a zip


GLUE = "https://dl.fbaipublicfiles.com/glue/data"
SUPERGLUE = "https://dl.fbaipublicfiles.com/glue/superglue/data/v2"


SOURCES: dict[str, DatasetSource] = {
    "boolq": DatasetSource(
        name="boolq",
        url="https://dl.fbaipublicfiles.com/glue/superglue/data/v2/BoolQ.zip",
        folder="BoolQ",
        files={"train.jsonl": 9427, "val.jsonl": 3270, "test.jsonl": 3245},
    ),
    "qqp": DatasetSource(
        name="qqp",
        url="https://dl.fbaipublicfiles.com/glue/data/QQP-clean.zip",
        folder="QQP",
        files={"train.tsv": 363846, "dev.tsv": 40430, "test.tsv": 390965},
    ),
    # the row counts below are those of the Hugging Face glue / super_glue dataset cards (not checked against a
    # download on the machine this was written on, which had no network): a mismatch is reported, never ignored
    "cola": DatasetSource(
        "cola",
        f"{GLUE}/CoLA.zip",
        "CoLA",
        {"train.tsv": 8551, "dev.tsv": 1043, "test.tsv": 1063},
        headerless=frozenset({"train.tsv", "dev.tsv"}),
    ),
    "stsb": DatasetSource("stsb", f"{GLUE}/STS-B.zip", "STS-B", {"train.tsv": 5749, "dev.tsv": 1500, "test.tsv": 1379}),
    "sst2": DatasetSource("sst2", f"{GLUE}/SST-2.zip", "SST-2", {"train.tsv": 67349, "dev.tsv": 872, "test.tsv": 1821}),
    "mnli": DatasetSource(
        "mnli",
        f"{GLUE}/MNLI.zip",
        "MNLI",
        {
            "train.tsv": 392702,
            "dev_matched.tsv": 9815,
            "dev_mismatched.tsv": 9832,
            "test_matched.tsv": 9796,
            "test_mismatched.tsv": 9847,
        },
    ),
    "ax": DatasetSource("ax", f"{GLUE}/AX.tsv", "diagnostic", {"diagnostic.tsv": 1104}, single_file=True),
    "qnli": DatasetSource(
        "qnli", f"{GLUE}/QNLIv2.zip", "QNLI", {"train.tsv": 104743, "dev.tsv": 5463, "test.tsv": 5463}
    ),
    "rte": DatasetSource("rte", f"{GLUE}/RTE.zip", "RTE", {"train.tsv": 2490, "dev.tsv": 277, "test.tsv": 3000}),
    "wnli": DatasetSource("wnli", f"{GLUE}/WNLI.zip", "WNLI", {"train.tsv": 635, "dev.tsv": 71, "test.tsv": 146}),
    "cb": DatasetSource("cb", f"{SUPERGLUE}/CB.zip", "CB", {"train.jsonl": 250, "val.jsonl": 56, "test.jsonl": 250}),
    "rte_superglue": DatasetSource(
        "rte_superglue", f"{SUPERGLUE}/RTE.zip", "RTE", {"train.jsonl": 2490, "val.jsonl": 277, "test.jsonl": 3000}
    ),
    "axb": DatasetSource("axb", f"{SUPERGLUE}/AX-b.zip", "AX-b", {"AX-b.jsonl": 1104}),
    "axg": DatasetSource("axg", f"{SUPERGLUE}/AX-g.zip", "AX-g", {"AX-g.jsonl": 356}),
}

# what ``--task`` fetches: a task's own data and the diagnostics its model predicts. MRPC has no official zip (GLUE's
# script assembles it from Microsoft's files): put its train.tsv, dev.tsv and test.tsv into MRPC/ yourself.
TASK_SOURCES: dict[str, tuple[str, ...]] = {
    "boolq": ("boolq",),
    "qqp": ("qqp",),
    "cola": ("cola",),
    "sst2": ("sst2",),
    "stsb": ("stsb",),
    "mnli": ("mnli", "ax"),
    "qnli": ("qnli",),
    "rte": ("rte",),
    "wnli": ("wnli",),
    "cb": ("cb",),
    "rte_superglue": ("rte_superglue", "axb", "axg"),
}
BENCHMARKS = {
    "glue": ("qqp", "cola", "sst2", "stsb", "mnli", "ax", "qnli", "rte", "wnli"),
    "superglue": ("boolq", "cb", "rte_superglue", "axb", "axg"),
}


def sources_for(choice: str) -> list[str]:
    """The data sets ``--task`` names: a task, ``glue``, ``superglue`` or ``all``."""
    if choice == "all":
        return list(SOURCES)
    if choice in BENCHMARKS:
        return list(BENCHMARKS[choice])
    return list(TASK_SOURCES[choice])


def default_data_root() -> Path:
    return Path(os.environ.get("FT_DATA_ROOT") or REPO_ROOT / "data" / "fine_tune")


# --------------------------------------------------------------------------------------------- verify


def count_rows(path: Path, header: bool | None = None) -> int:
    """Number of data rows: non-empty lines, minus the header line (default: ``.tsv`` files have one)."""
    path = Path(path)
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip(b"\r\n"):
                n += 1
    if header is None:
        header = path.suffix.lower() == ".tsv"
    if header and n > 0:
        n -= 1
    return n


def verify(data_root: Path, source: DatasetSource) -> list[str]:
    """Problems with ``source``'s files under ``data_root`` (missing file, wrong row count); [] if fine."""
    problems = []
    for name, expected in source.files.items():
        rel = f"{source.folder}/{name}"
        path = Path(data_root) / source.folder / name
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        try:
            rows = count_rows(path, header=path.suffix.lower() == ".tsv" and name not in source.headerless)
        except OSError as e:
            problems.append(f"{rel}: unreadable ({e.strerror or e})")
            continue
        if rows != expected:
            problems.append(f"{rel}: {rows} rows, expected {expected}")
    return problems


# --------------------------------------------------------------------------------------------- unpack


def _member_parts(name: str) -> tuple[str, ...] | None:
    """Path parts of a zip member name, or None when the name is unsafe (absolute, drive, ``..``)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) >= 2 and norm[1] == ":"):
        return None
    parts = tuple(p for p in PurePosixPath(norm).parts if p not in ("", "."))
    if ".." in parts:
        return None
    return parts


def unpack(zip_path: Path, data_root: Path, source: DatasetSource) -> None:
    """Extract the expected files of ``source.folder`` from ``zip_path`` into ``data_root``.

    Every member name is checked first: one with an absolute path or ``..`` makes the whole zip refused.
    Members outside the expected files are ignored. Each expected file is written to a temporary file in
    its target folder; all are renamed over their targets once every one has been extracted.
    """
    zip_path, data_root = Path(zip_path), Path(data_root)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(f"{zip_path}: not a readable zip file ({e})") from None
    with zf:
        wanted: dict[tuple[str, ...], zipfile.ZipInfo] = {}
        expected = {(source.folder, name) for name in source.files}
        for info in zf.infolist():
            parts = _member_parts(info.filename)
            if parts is None:
                raise DownloadError(f"{zip_path}: refusing unsafe member {info.filename!r} (absolute path or '..')")
            if parts in expected and not info.is_dir():
                wanted[parts] = info
        missing = sorted("/".join(p) for p in expected - set(wanted))
        if missing:
            raise DownloadError(f"{zip_path}: zip lacks {', '.join(missing)}")

        target_dir = data_root / source.folder
        target_dir.mkdir(parents=True, exist_ok=True)
        done: list[tuple[str, Path]] = []  # (temp file, target)
        try:
            for name in source.files:
                info = wanted[(source.folder, name)]
                target = target_dir / name
                fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + name + ".", dir=target_dir)
                done.append((tmp, target))
                honour_umask(tmp)
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    shutil.copyfileobj(src, out, CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
        except BaseException as e:
            for tmp, _ in done:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            if isinstance(e, (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError)):
                raise DownloadError(f"{zip_path}: corrupt zip ({e})") from None
            if isinstance(e, OSError):
                raise DownloadError(f"extracting {zip_path} into {target_dir} failed: {e}") from None
            raise
        for tmp, target in done:
            os.replace(tmp, target)


# ------------------------------------------------------------------------------------------- download


def _progress(total: int | None, desc: str) -> tqdm:
    """The bytes of one download (KiB, MiB... as they grow: unit scaling by 1024), on stderr
    (fine_tune/progress.py: off with TQDM_DISABLE and on every torchrun rank but 0)."""
    from ..progress import progress

    return progress(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)


def download(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (via ``dest.part``, renamed when complete) with a progress bar.

    Any failure (network, HTTP status, truncated body, disk) raises :class:`DownloadError` naming the url
    and leaves neither ``dest.part`` nor ``dest`` behind.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "fine_tune-download/1.0"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with open(part, "wb") as out, _progress(total, dest.name.removeprefix(TMP_PREFIX)) as bar:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if total is not None and received != total:
                raise DownloadError(f"download of {url} truncated: {received} of {total} bytes")
        os.replace(part, dest)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        if isinstance(e, DownloadError):
            raise
        if isinstance(e, urllib.error.HTTPError):
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
        if isinstance(e, urllib.error.URLError):
            raise DownloadError(f"download of {url} failed: {e.reason}") from None
        if isinstance(e, (OSError, http.client.HTTPException, ValueError)):
            raise DownloadError(f"download of {url} failed: {type(e).__name__}: {e}") from None
        raise


# ---------------------------------------------------------------------------------------------- fetch


def fetch(
    data_root: Path,
    names: Iterable[str] = ("boolq", "qqp"),
    force: bool = False,
    sources: Mapping[str, DatasetSource] = SOURCES,
    downloader: Callable[[str, Path], None] = download,
) -> dict[str, str]:
    """Make sure each named data set is present and verified under ``data_root``; name -> status."""
    data_root = Path(data_root)
    names = list(names)
    unknown = [n for n in names if n not in sources]
    if unknown:
        raise DownloadError(f"unknown data set {unknown[0]!r}; choose from {', '.join(sources)}")
    status: dict[str, str] = {}
    for name in names:
        source = sources[name]
        if not force and not verify(data_root, source):
            status[name] = "already present, verified"
            continue
        data_root.mkdir(parents=True, exist_ok=True)
        zip_path = data_root / f"{TMP_PREFIX}{source.folder}.zip"
        part = zip_path.with_name(zip_path.name + ".part")
        try:
            downloader(source.url, zip_path)
            if not zip_path.is_file():
                raise DownloadError(f"download of {source.url} produced no file")
            if source.single_file:  # the file itself: moved into place whole
                (name,) = source.files
                (data_root / source.folder).mkdir(parents=True, exist_ok=True)
                os.replace(zip_path, data_root / source.folder / name)
            else:
                unpack(zip_path, data_root, source)
        finally:
            for leftover in (zip_path, part):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        problems = verify(data_root, source)
        if problems:
            raise DownloadError(f"{name}: data from {source.url} failed verification: {'; '.join(problems)}")
        rows = sum(source.files.values())
        status[name] = f"downloaded, verified ({len(source.files)} files, {rows} rows)"
    return status


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="download_data.py",
        description="Download, unpack and verify the GLUE and SuperGLUE data sets (every task, or one) into the\n"
        "data root.\n\nDocs: README.md (\"Real data and models\").",
    )
    parser.add_argument(
        "--data_root", default=None, help="data root (default: env FT_DATA_ROOT, else <repo>/data/fine_tune)"
    )
    parser.add_argument(
        "--task",
        default="all",
        choices=(*TASK_SOURCES, "glue", "superglue", "all"),
        help="a task (with the diagnostics its model predicts), glue, superglue or all (default)",
    )
    parser.add_argument(
        "--force", action="store_true", help="download and unpack again even when the files are present and verified"
    )
    args = parser.parse_args(argv)
    data_root = Path(args.data_root) if args.data_root else default_data_root()
    names = list(SOURCES) if args.task == "all" else sources_for(args.task)
    try:
        for name in names:
            # module globals looked up at call time, so tests can substitute them
            status = fetch(data_root, [name], force=args.force, sources=SOURCES, downloader=download)[name]
            print(f"{name}: {status} ({data_root / SOURCES[name].folder})", flush=True)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
