"""Your own data: a task defined by a ``task.json`` in its own folder under the data root.

``<data_root>/<name>/task.json`` makes ``--task <name>`` a task like the official ones (every script, every method,
the results tables and the submission file). Example (doc/methods.md, "Your own data")::

    {"files": {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"},
     "text": "question", "text_pair": "answer", "label": "verdict", "labels": ["wrong", "right"],
     "id": "qid", "metrics": ["accuracy", "f1"]}

- ``files``: split -> file in the folder: ``.csv``, ``.tsv`` (a header line naming the columns), ``.jsonl``
  (one JSON object a line) or ``.parquet`` (needs pyarrow). Splits named ``test...`` are unlabelled unless
  ``unlabelled`` lists others.
- ``text``, optional ``text_pair``, ``label``: column names. ``labels``: the classes in the model's output order,
  as the files write them (strings or integers), or ``"regression": true`` for a numeric score.
- ``id`` (optional): an integer id column (submissions name rows by it); default the row number from 0.
- ``metrics`` (default accuracy, or Pearson and Spearman for regression), ``main_metric`` (default the first),
  ``dev_split`` (default ``dev``, else ``val``, else the first labelled split other than train).
- ``hf`` (instead of data files): a Hugging Face ``datasets`` source, ``{"path": "glue", "name": "sst2", "splits":
  {"train": "train", "dev": "validation", "test": "test"}}`` (``path``: a hub name, or a local folder of data files).
  On first use each split is loaded with ``datasets.load_dataset`` and written into the task's folder as
  ``<split>.jsonl`` (class labels as their names), which every later run reads and hashes like any data file.

The definition and the sha256 of ``task.json`` go into each experiment's ``config.json``; its data files are
checked by sha256 on resume like every input.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ..errors import UserError
from .columns import score
from .example import Example, check_unique_ids, json_objects, text_lines
from .metrics import METRICS

TASK_FILE = "task.json"
FORMATS = (".csv", ".tsv", ".jsonl", ".parquet")
KEYS = {"files", "text", "text_pair", "label", "labels", "regression", "id", "metrics", "main_metric", "dev_split",
        "unlabelled", "hf"}
HF_KEYS = {"path", "name", "splits"}


def definition_path(data_root: Path, name: str) -> Path:
    return Path(data_root) / name / TASK_FILE


def _rows(path: Path):
    """(where, row dict) of a data file, by its extension."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from json_objects(path)
        return
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from None
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}, row {i + 1}", row
        return
    lines = [line for _, line in text_lines(path)]
    reader = csv.DictReader(lines, delimiter="\t" if suffix == ".tsv" else ",")
    for i, row in enumerate(reader, start=2):
        if None in row:  # more cells than the header names
            raise UserError(f"{path}, line {i}: {len(row) - 1 + len(row[None])} cells, the header names {len(row) - 1}")
        yield f"{path}, line {i}", row


def parse_user_file(path: Path, labelled: bool, *, spec: dict) -> list[Example]:
    """Rows of one of the task's files as :class:`Example`s; a missing column, a label outside the set, a score
    that is not a number or a test row without its id names the file, the line (or row) and the column."""
    examples: list[Example] = []
    labels = [str(x) for x in spec.get("labels") or []]
    for where, row in _rows(Path(path)):
        def cell(column: str, required: bool = True):
            if column not in row or row[column] is None or row[column] == "":
                if required:
                    raise UserError(f"{where}: no value in column {column!r} (columns: {', '.join(map(str, row))})")
                return None
            return row[column]

        idx = len(examples)
        if spec.get("id"):
            raw = cell(spec["id"])
            try:
                idx = int(raw)
            except (TypeError, ValueError):
                raise UserError(f"{where}: id {raw!r} in column {spec['id']!r} is not an integer") from None
        text = str(cell(spec["text"]))
        pair = spec.get("text_pair")
        pair = None if not pair else str(cell(pair))
        label = None
        if labelled:
            raw = cell(spec["label"])
            if spec.get("regression"):
                label = score(raw, where, repr(spec["label"]))
            else:
                if str(raw) not in labels:
                    raise UserError(f"{where}: label {raw!r} in column {spec['label']!r} is not one of the task's "
                                    f"labels ({', '.join(labels)})")
                label = labels.index(str(raw))
        examples.append(Example(idx=idx, text=text, text_pair=pair, label=label))
    if not labelled:
        check_unique_ids(examples, Path(path))
    return examples


def read_definition(path: Path) -> dict:
    """The checked definition of ``task.json`` (one-line errors naming the file and the field)."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable task definition ({e})") from None
    return check_definition(spec, str(path))


def check_definition(spec, where: str) -> dict:
    if not isinstance(spec, dict):
        raise UserError(f"{where}: a task definition is a JSON object")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)} (fields: {', '.join(sorted(KEYS))})")
    hf = spec.get("hf")
    if hf is not None:
        if (not isinstance(hf, dict) or set(hf) - HF_KEYS or not isinstance(hf.get("path"), str)
                or not isinstance(hf.get("splits"), dict) or not hf["splits"]):
            raise UserError(f"{where}: 'hf' must be {{\"path\": NAME, \"name\": CONFIG (optional), \"splits\": "
                            f"{{SPLIT: HF_SPLIT}}}}")
        spec = dict(spec, files=spec.get("files") or {split: f"{split}.jsonl" for split in hf["splits"]})
    files = spec.get("files")
    if not isinstance(files, dict) or not files or not all(isinstance(v, str) for v in files.values()):
        raise UserError(f"{where}: 'files' must map each split to a file name, e.g. {{\"train\": \"train.csv\"}}")
    for split, name in files.items():
        if Path(name).suffix.lower() not in FORMATS or "/" in name or "\\" in name or name.startswith("."):
            raise UserError(f"{where}: files.{split} {name!r}: a file in the task's folder ending in "
                            f"{', '.join(FORMATS)}")
    for field in ("text", "label"):
        if not isinstance(spec.get(field), str) or not spec[field]:
            raise UserError(f"{where}: '{field}' must name a column")
    regression = bool(spec.get("regression"))
    labels = spec.get("labels")
    if not regression and (not isinstance(labels, list) or len(labels) < 2 or len({str(x) for x in labels}) != len(labels)):
        raise UserError(f"{where}: 'labels' must list at least two distinct classes in output order "
                        f"(or set \"regression\": true)")
    metrics = spec.get("metrics") or (["pearson", "spearman"] if regression else ["accuracy"])
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise UserError(f"{where}: unknown metric(s) {', '.join(bad)} (metrics: {', '.join(METRICS)})")
    main = spec.get("main_metric") or metrics[0]
    if main not in metrics:
        raise UserError(f"{where}: main_metric {main!r} is not one of its metrics {metrics}")
    return dict(spec, metrics=list(metrics), main_metric=main)


SOURCES_FILE = "hf-sources.json"  # in the task's folder: each fetched file's Hugging Face source and sha256


def hf_source(spec: dict, split: str, labelled: bool) -> dict:
    """What decides the file a split of a Hugging Face source becomes (:func:`materialise`)."""
    hf = spec["hf"]
    return {"path": hf["path"], "name": hf.get("name"), "split": hf["splits"].get(split), "label": spec["label"],
            "labelled": labelled}


def ensure_materialised(spec: dict, split: str, path: Path, labelled: bool) -> None:
    """The split's file, fetched from the definition's Hugging Face source unless already there from that same
    source. Each fetched file's source and sha256 are recorded in the folder's ``hf-sources.json``: when
    ``task.json``'s ``hf`` changes (another dataset, configuration or split), a file the toolkit fetched and nobody
    edited is fetched again; one edited since is refused (it is not the toolkit's to replace). A file the record
    does not name (written by hand, or by a version before the record) is read as it is."""
    from ..io_utils import atomic_write_json, read_json_object, sha256_file

    want = hf_source(spec, split, labelled)
    records_path = path.parent / SOURCES_FILE
    records = read_json_object(records_path) if records_path.is_file() else {}
    have = records.get(path.name)
    if path.is_file():
        if not isinstance(have, dict) or have.get("source") == want:
            return
        if sha256_file(path) != have.get("sha256"):
            raise UserError(f"{path} was fetched from {have.get('source')} and has been edited since; the task's hf "
                            f"source is now {want}: move the file away to fetch it again, or restore task.json")
        print(f"note: {path}: the task's hf source changed ({have.get('source')} -> {want}): fetching it again",
              file=sys.stderr)
    materialise(spec, split, path, labelled)
    records = read_json_object(records_path) if records_path.is_file() else {}  # another split may have been added
    records[path.name] = {"source": want, "sha256": sha256_file(path)}
    try:
        atomic_write_json(records_path, records)
    except OSError as e:
        raise UserError(f"could not write {records_path}: {e.strerror or e}") from None


def materialise(spec: dict, split: str, path: Path, labelled: bool) -> None:
    """Write split ``split`` of the definition's Hugging Face source to ``path`` (JSON lines, atomically): every
    column, class labels as their names; an unlabelled split without its label column."""
    from ..io_utils import atomic_write_text

    hf = spec["hf"]
    hf_split = hf["splits"].get(split)
    if hf_split is None:
        raise UserError(f"split {split!r} is not in the task's hf.splits ({', '.join(hf['splits'])})")
    try:
        import datasets
    except ImportError:
        raise UserError("a Hugging Face dataset source needs the datasets library: pip install datasets") from None
    name = f"{hf['path']}{'/' + hf['name'] if hf.get('name') else ''}"
    try:
        ds = datasets.load_dataset(hf["path"], hf.get("name"), split=hf_split)
    except Exception as e:  # noqa: BLE001 - network, unknown name or split: one line
        raise UserError(f"could not load the Hugging Face dataset {name!r} split {hf_split!r}: "
                        f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None
    label = spec["label"]
    feature = ds.features.get(label)
    names = getattr(feature, "names", None)  # a ClassLabel
    lines = []
    for row in ds:
        row = dict(row)
        if not labelled:
            row.pop(label, None)
        elif names is not None and isinstance(row.get(label), int) and row[label] >= 0:
            row[label] = names[row[label]]
        lines.append(json.dumps(row, ensure_ascii=False))
    if not lines:
        raise UserError(f"the Hugging Face dataset {name!r} split {hf_split!r} holds no rows")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "\n".join(lines) + "\n")
    except OSError as e:
        raise UserError(f"could not write {path} (the Hugging Face split {hf_split!r} as JSON lines): "
                        f"{e.strerror or e}; make the data root writable, or write the file there yourself") from None
