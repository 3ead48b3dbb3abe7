"""Tests for fine_tune/tasks/download.py: unpack, verify, re-run, force, zip-slip, failures, CLI.

No network: small zips with the official member layout are built in tmp_path and a fake downloader
copies them to the requested destination.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fine_tune.tasks import download as dl

REPO = Path(__file__).resolve().parent.parent

SMALL = {
    "boolq": dl.DatasetSource(
        "boolq", "https://example.invalid/BoolQ.zip", "BoolQ", {"train.jsonl": 3, "val.jsonl": 2, "test.jsonl": 1}
    ),
    "qqp": dl.DatasetSource(
        "qqp", "https://example.invalid/QQP-clean.zip", "QQP", {"train.tsv": 3, "dev.tsv": 2, "test.tsv": 2}
    ),
}


def _jsonl(n: int, labelled: bool = True) -> str:
    rows = []
    for i in range(n):
        row = {"question": f"q{i}?", "passage": f"passage {i}", "idx": i}
        if labelled:
            row["label"] = bool(i % 2)
        rows.append(json.dumps(row))
    return "\n".join(rows) + "\n"


def _tsv(n: int, labelled: bool = True) -> str:
    if labelled:
        lines = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"]
        lines += [f"{i}\t{2 * i}\t{2 * i + 1}\tq{i} a?\tq{i} b?\t{i % 2}" for i in range(n)]
    else:
        lines = ["id\tquestion1\tquestion2"] + [f"{i}\tq{i} a?\tq{i} b?" for i in range(n)]
    return "\n".join(lines) + "\n"


def make_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def boolq_members(train_rows: int = 3) -> dict[str, str]:
    return {
        "BoolQ/train.jsonl": _jsonl(train_rows),
        "BoolQ/val.jsonl": _jsonl(2),
        "BoolQ/test.jsonl": _jsonl(1, labelled=False),
    }


def qqp_members() -> dict[str, str]:
    return {
        "QQP/train.tsv": _tsv(3),
        "QQP/dev.tsv": _tsv(2),
        "QQP/test.tsv": _tsv(2, labelled=False),
        "QQP/original/quora_duplicate_questions.tsv": "junk\n",
        "__MACOSX/QQP/._train.tsv": "\x00\x05\x16\x07 mac resource fork",
    }


class FakeDownloader:
    """Copies a prepared zip (per url) to dest, recording the calls."""

    def __init__(self, zips: dict[str, Path]):
        self.zips = zips
        self.calls: list[tuple[str, Path]] = []

    def __call__(self, url: str, dest: Path) -> None:
        self.calls.append((url, Path(dest)))
        shutil.copyfile(self.zips[url], dest)


@pytest.fixture
def zips(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    return {
        SMALL["boolq"].url: make_zip(src / "BoolQ.zip", boolq_members()),
        SMALL["qqp"].url: make_zip(src / "QQP-clean.zip", qqp_members()),
    }


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_table_holds_official_sources():
    from fine_tune.tasks import TASKS

    assert set(dl.SOURCES) == {
        "boolq",
        "qqp",
        "cola",
        "sst2",
        "stsb",
        "mnli",
        "ax",
        "qnli",
        "rte",
        "wnli",
        "cb",
        "rte_superglue",
        "axb",
        "axg",
    }
    # what a task's sources unpack is exactly what the task reads, split by split (MRPC has no official zip)
    root = Path("/root")
    for name, task in TASKS.items():
        fetched = {root / dl.SOURCES[s].folder / f for s in dl.TASK_SOURCES.get(name, ()) for f in dl.SOURCES[s].files}
        read = {task.path(root, split) for split in task.splits}
        assert fetched == (set() if name == "mrpc" else read), name
    assert set(dl.sources_for("glue")) | set(dl.sources_for("superglue")) == set(dl.SOURCES)
    # each benchmark fetches exactly its own tasks' data and diagnostics
    for benchmark in ("glue", "superglue"):
        own = {s for name, task in TASKS.items() if task.benchmark == benchmark for s in dl.TASK_SOURCES.get(name, ())}
        assert set(dl.sources_for(benchmark)) == own, benchmark
    assert dl.sources_for("all") == list(dl.SOURCES)
    assert dl.sources_for("mnli") == ["mnli", "ax"] and dl.sources_for("rte_superglue") == [
        "rte_superglue",
        "axb",
        "axg",
    ]
    assert dl.SOURCES["boolq"].files == {"train.jsonl": 9427, "val.jsonl": 3270, "test.jsonl": 3245}
    assert dl.SOURCES["qqp"].files == {"train.tsv": 363846, "dev.tsv": 40430, "test.tsv": 390965}
    assert dl.SOURCES["boolq"].url.endswith("/superglue/data/v2/BoolQ.zip")
    assert dl.SOURCES["qqp"].url.endswith("/glue/data/QQP-clean.zip")


def test_count_rows(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text(_jsonl(4) + "\n\n")  # trailing blank lines are not rows
    (tmp_path / "b.tsv").write_text(_tsv(5))
    (tmp_path / "c.tsv").write_text(_tsv(5).rstrip("\n"))  # no final newline
    (tmp_path / "empty.tsv").write_text("")
    (tmp_path / "d.tsv").write_bytes(_tsv(3).replace("\n", "\r\n").encode() + b"\r\n")  # CRLF, a blank last line
    assert dl.count_rows(tmp_path / "d.tsv") == 3
    assert dl.count_rows(tmp_path / "b.tsv", header=False) == 6  # the header counted when told there is none
    assert dl.count_rows(tmp_path / "a.jsonl", header=True) == 3
    assert dl.count_rows(tmp_path / "a.jsonl") == 4
    assert dl.count_rows(tmp_path / "b.tsv") == 5
    assert dl.count_rows(tmp_path / "c.tsv") == 5
    assert dl.count_rows(tmp_path / "empty.tsv") == 0


def test_unpack_and_verify(tmp_path: Path, zips):
    root = tmp_path / "data"
    assert dl.verify(root, SMALL["qqp"]) == ["QQP/train.tsv: missing", "QQP/dev.tsv: missing", "QQP/test.tsv: missing"]
    dl.unpack(zips[SMALL["qqp"].url], root, SMALL["qqp"])
    dl.unpack(zips[SMALL["boolq"].url], root, SMALL["boolq"])
    assert dl.verify(root, SMALL["qqp"]) == []
    assert dl.verify(root, SMALL["boolq"]) == []
    # only the expected files, no __MACOSX, no original/, no temp files
    assert listing(root) == [
        "BoolQ",
        "BoolQ/test.jsonl",
        "BoolQ/train.jsonl",
        "BoolQ/val.jsonl",
        "QQP",
        "QQP/dev.tsv",
        "QQP/test.tsv",
        "QQP/train.tsv",
    ]
    assert (root / "QQP/dev.tsv").read_text() == _tsv(2)


def test_unpacked_files_parse_with_the_task_parsers(tmp_path: Path, zips):
    from fine_tune.tasks import get_task

    root = tmp_path / "data"
    dl.fetch(root, sources=SMALL, downloader=FakeDownloader(zips))
    assert len(get_task("boolq").load(root, "train")) == 3
    assert len(get_task("qqp").load(root, "dev")) == 2
    assert len(get_task("qqp").load(root, "test")) == 2


def test_fetch_then_rerun_skips_download_and_force_redownloads(tmp_path: Path, zips):
    root = tmp_path / "data"
    fake = FakeDownloader(zips)
    status = dl.fetch(root, sources=SMALL, downloader=fake)
    assert set(status) == {"boolq", "qqp"}
    assert all(s.startswith("downloaded, verified") for s in status.values())
    assert [url for url, _ in fake.calls] == [SMALL["boolq"].url, SMALL["qqp"].url]
    # the zip went into the data root under a temp name and was deleted afterwards
    assert all(dest.parent == root and dest.name.startswith(".tmp-") for _, dest in fake.calls)
    assert not any(p.name.startswith(".tmp-") or p.suffix in (".zip", ".part") for p in root.rglob("*"))

    status = dl.fetch(root, sources=SMALL, downloader=fake)
    assert status == {"boolq": "already present, verified", "qqp": "already present, verified"}
    assert len(fake.calls) == 2  # no new download

    (root / "QQP/dev.tsv").write_text("tampered\n")
    status = dl.fetch(root, ["qqp"], force=True, sources=SMALL, downloader=fake)
    assert status["qqp"].startswith("downloaded, verified")
    assert len(fake.calls) == 3 and fake.calls[-1][0] == SMALL["qqp"].url
    assert (root / "QQP/dev.tsv").read_text() == _tsv(2)


def test_broken_file_triggers_redownload_without_force(tmp_path: Path, zips):
    root = tmp_path / "data"
    fake = FakeDownloader(zips)
    dl.fetch(root, ["boolq"], sources=SMALL, downloader=fake)
    (root / "BoolQ/val.jsonl").unlink()
    assert dl.verify(root, SMALL["boolq"]) == ["BoolQ/val.jsonl: missing"]
    assert dl.fetch(root, ["boolq"], sources=SMALL, downloader=fake)["boolq"].startswith("downloaded")
    assert len(fake.calls) == 2


@pytest.mark.parametrize("train_rows", [4, 2], ids=["more", "fewer"])
def test_wrong_row_count_raises_naming_file_and_counts(tmp_path: Path, train_rows: int):
    src = make_zip(tmp_path / "BoolQ.zip", boolq_members(train_rows=train_rows))
    root = tmp_path / "data"
    fake = FakeDownloader({SMALL["boolq"].url: src})
    with pytest.raises(dl.DownloadError) as exc:
        dl.fetch(root, ["boolq"], sources=SMALL, downloader=fake)
    msg = str(exc.value)
    assert f"BoolQ/train.jsonl: {train_rows} rows, expected 3" in msg
    assert "\n" not in msg
    assert dl.verify(root, SMALL["boolq"]) == [f"BoolQ/train.jsonl: {train_rows} rows, expected 3"]
    assert not list(root.glob(".tmp-*"))


@pytest.mark.parametrize("bad", ["../evil.txt", "BoolQ/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt"])
def test_zip_slip_member_refused(tmp_path: Path, bad: str):
    members = boolq_members()
    members[bad] = "pwned\n"
    src = make_zip(tmp_path / "BoolQ.zip", members)
    root = tmp_path / "a" / "data"
    with pytest.raises(dl.DownloadError, match="unsafe member"):
        dl.unpack(src, root, SMALL["boolq"])
    # nothing extracted anywhere
    assert not (root / "BoolQ" / "train.jsonl").exists()
    assert not (tmp_path / "a" / "evil.txt").exists() and not (root / "evil.txt").exists()
    assert not Path("/tmp/evil.txt").exists() or Path("/tmp/evil.txt").read_text() != "pwned\n"


def test_zip_missing_expected_member(tmp_path: Path):
    members = boolq_members()
    del members["BoolQ/val.jsonl"]
    src = make_zip(tmp_path / "BoolQ.zip", members)
    with pytest.raises(dl.DownloadError, match="lacks BoolQ/val.jsonl"):
        dl.unpack(src, tmp_path / "data", SMALL["boolq"])
    assert not (tmp_path / "data" / "BoolQ" / "train.jsonl").exists()


def test_not_a_zip(tmp_path: Path):
    src = tmp_path / "BoolQ.zip"
    src.write_text("<html>Access denied</html>")
    root = tmp_path / "data"
    fake = FakeDownloader({SMALL["boolq"].url: src})
    with pytest.raises(dl.DownloadError, match="not a readable zip"):
        dl.fetch(root, ["boolq"], sources=SMALL, downloader=fake)
    assert listing(root) == []


def test_failing_downloader_leaves_no_partial_files(tmp_path: Path):
    root = tmp_path / "data"

    def failing(url: str, dest: Path) -> None:
        Path(str(dest) + ".part").write_bytes(b"PK\x03\x04half")
        Path(dest).write_bytes(b"PK\x03\x04half")
        raise dl.DownloadError(f"download of {url} failed: connection reset")

    with pytest.raises(dl.DownloadError, match="example.invalid/QQP-clean.zip"):
        dl.fetch(root, ["qqp"], sources=SMALL, downloader=failing)
    assert listing(root) == []


def test_download_failure_message_names_url_and_cleans_part(tmp_path: Path):
    dest = tmp_path / ".tmp-BoolQ.zip"
    url = (tmp_path / "does-not-exist.zip").as_uri()
    with pytest.raises(dl.DownloadError) as exc:
        dl.download(url, dest)
    assert url in str(exc.value) and "\n" not in str(exc.value)
    assert listing(tmp_path) == []


def test_download_success_via_file_url(tmp_path: Path, zips, monkeypatch, capsys):
    dest = tmp_path / "out" / "BoolQ.zip"
    dest.parent.mkdir()
    src = zips[SMALL["boolq"].url]
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # issue 32: the bytes' bar on stderr
    dl.download(src.as_uri(), dest)
    assert f"BoolQ.zip:   0%|          | 0.00/{src.stat().st_size} [" in capsys.readouterr().err
    assert dest.read_bytes() == src.read_bytes()
    assert listing(dest.parent) == ["BoolQ.zip"]
    big = tmp_path / "big.zip"  # sizes scaled by 1024: 3 MiB
    big.write_bytes(bytes(3 * 1024 * 1024 + 5))
    dl.download(big.as_uri(), tmp_path / "out" / "big.zip")
    assert "big.zip:   0%|          | 0.00/3.00M [" in capsys.readouterr().err
    monkeypatch.setenv("TQDM_DISABLE", "1")
    dl.download(src.as_uri(), dest)
    assert capsys.readouterr().err == ""


def test_unknown_name(tmp_path: Path):
    with pytest.raises(dl.DownloadError, match="unknown data set .mnli."):
        dl.fetch(tmp_path, ["mnli"], sources=SMALL, downloader=FakeDownloader({}))


def test_main_success_and_error(tmp_path: Path, zips, monkeypatch, capsys):
    monkeypatch.setattr(dl, "SOURCES", SMALL)
    monkeypatch.setattr(dl, "download", FakeDownloader(zips))
    root = tmp_path / "data"
    assert dl.main(["--data_root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("boolq: downloaded") and out[1].startswith("qqp: downloaded")

    assert dl.main(["--data_root", str(root), "--task", "qqp"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"qqp: already present, verified ({root / 'QQP'})"]

    def failing(url: str, dest: Path) -> None:
        raise dl.DownloadError(f"download of {url} failed: HTTP 403 Forbidden")

    monkeypatch.setattr(dl, "download", failing)
    assert dl.main(["--data_root", str(root), "--task", "boolq", "--force"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: download of https://example.invalid/BoolQ.zip failed: HTTP 403 Forbidden\n"


def test_main_default_data_root_from_env(tmp_path: Path, zips, monkeypatch, capsys):
    monkeypatch.setattr(dl, "SOURCES", SMALL)
    monkeypatch.setattr(dl, "download", FakeDownloader(zips))
    monkeypatch.setenv("FT_DATA_ROOT", str(tmp_path / "envroot"))
    assert dl.main(["--task", "boolq"]) == 0
    assert (tmp_path / "envroot" / "BoolQ" / "train.jsonl").is_file()
    monkeypatch.delenv("FT_DATA_ROOT")
    assert dl.default_data_root() == REPO / "data" / "fine_tune"


def test_import_has_no_side_effects_and_entry_script_runs(tmp_path: Path):
    # a fresh interpreter: importing creates nothing; the entry script works from another cwd
    code = "import fine_tune.tasks.download as d, os; print(os.path.exists(d.default_data_root()))"
    env = {**os.environ, "FT_DATA_ROOT": str(tmp_path / "nowhere"), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    r = subprocess.run(
        [sys.executable, str(REPO / "download_data.py"), "--task", "squad"],
        cwd=tmp_path,
        env={**os.environ, "FT_DATA_ROOT": str(tmp_path / "nowhere")},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "invalid choice" in r.stderr
    assert not (tmp_path / "nowhere").exists()


def test_headerless_tsv_and_a_single_file_source(tmp_path: Path):
    """CoLA's train/dev have no header line (every line a row); GLUE's AX is one file, not a zip."""
    cola = dl.DatasetSource(
        "cola",
        "https://example.invalid/CoLA.zip",
        "CoLA",
        {"train.tsv": 2, "test.tsv": 1},
        headerless=frozenset({"train.tsv"}),
    )
    ax = dl.DatasetSource("ax", "https://example.invalid/AX.tsv", "diagnostic", {"diagnostic.tsv": 2}, single_file=True)
    src = tmp_path / "src"
    src.mkdir()
    cola_zip = make_zip(
        src / "CoLA.zip",
        {"CoLA/train.tsv": "gj04\t1\t\ta\ngj04\t0\t*\tb\n", "CoLA/test.tsv": "index\tsentence\n0\tc\n"},
    )
    (src / "AX.tsv").write_text("index\tsentence1\tsentence2\n0\ta\tb\n1\tc\td\n")
    fake = FakeDownloader({cola.url: cola_zip, ax.url: src / "AX.tsv"})
    root = tmp_path / "data"
    status = dl.fetch(root, ["cola", "ax"], sources={"cola": cola, "ax": ax}, downloader=fake)
    assert all(v.startswith("downloaded, verified") for v in status.values())
    assert (root / "diagnostic" / "diagnostic.tsv").read_text().startswith("index\tsentence1")
    assert dl.count_rows(root / "CoLA" / "train.tsv", header=False) == 2
    assert listing(root) == ["CoLA", "CoLA/test.tsv", "CoLA/train.tsv", "diagnostic", "diagnostic/diagnostic.tsv"]


def test_a_bad_flag_is_one_line(tmp_path: Path):
    """download_data.py's flag errors are one line and exit status 2, as every entry script's (issue 29: it printed
    argparse's usage block first)."""
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(repo / "download_data.py"), "--task", "bad", "--data_root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: download_data.py: argument --task: invalid choice: 'bad'")
    assert not any(tmp_path.iterdir())
