"""Your own data: a task defined by a ``task.json`` in its own folder under the data root.

``<data_root>/<name>/task.json`` makes ``--task <name>`` a task like the official ones (every script, every method,
the results tables and the submission file). Example (doc/methods.md, "Your own data")::

    {"files": {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"},
     "text": "question", "text_pair": "answer", "label": "verdict", "labels": ["wrong", "right"],
     "id": "qid", "metrics": ["accuracy", "f1"]}

:class:`TaskDefinition` declares every field with its type; ``task.json`` is read by it in strict mode (a string
is not a boolean, a string is not a list) and then checked for meaning: every split, metric and file it names must
exist when the task is read. Each problem is one line naming ``task.json`` and the field. Every string is
printable (no tab, newline or other control character: they would break the prediction files and the messages);
``task.json`` is UTF-8 (a byte-order mark allowed) read by :func:`~fine_tune.tasks.example.parse_json`.

- ``files``: split -> file in the folder: ``.csv``, ``.tsv`` (a header line naming the columns), ``.jsonl``
  (one JSON object a line) or ``.parquet`` (needs pyarrow). Splits named ``test...`` are unlabelled unless
  ``unlabelled`` lists others.
- ``text``, optional ``text_pair``, ``label``: column names. ``labels``: the classes in the model's output order,
  as the files write them (strings or integers), or ``"regression": true`` for a numeric score.
- ``id`` (optional): an integer id column (submissions name rows by it); default the row number from 0.
- ``metrics`` (default accuracy, or Pearson and Spearman for regression; given, a non-empty list naming each once,
  each suiting the task: :func:`~fine_tune.tasks.metrics.unsuitable`), ``main_metric`` (default the first),
  ``dev_split`` (default ``dev``, else ``val``, else the first labelled split other than train), ``unlabelled``
  (given, a non-empty list naming each split once).
- ``hf`` (instead of data files): a Hugging Face ``datasets`` source, ``{"path": "glue", "name": "sst2", "splits":
  {"train": "train", "dev": "validation", "test": "test"}}`` (``path``: a hub name, or a local folder of data files).
  On first use each split is loaded with ``datasets.load_dataset`` and written into the task's folder as
  ``<split>.jsonl`` (class labels as their names), which every later run reads and hashes like any data file.

How the files are read (:func:`parse_user_file`):

- ``.csv`` by the format's quoting rules (Python's csv module, strict): a cell in quotes may hold commas, doubled
  quotes and newlines; line numbers in messages are the file's own; a cell of any length.
- ``.tsv``: cells split on tabs with no quoting (a quote is an ordinary character), every line one row, as GLUE's
  files are read.
- every row of a ``.csv`` or ``.tsv`` file has as many cells as its header; text cells of ``.jsonl`` and
  ``.parquet`` files are strings; an id is an integer exactly (:func:`~fine_tune.tasks.example.exact_id`: a JSON
  or Parquet integer, or a cell of canonical decimal digits, within 64 bits): ``1.5``, ``3.0``, ``"7a"``, ``"007"``
  or ``"+3"`` is refused, never rounded or reformatted; a JSON line with a key written twice is refused.

The definition and the sha256 of ``task.json`` go into each experiment's ``config.json``; its data files are
checked by sha256 on resume like every input.
"""

from __future__ import annotations

import contextlib
import json
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic.functional_validators import AfterValidator, PlainValidator
from pydantic_core import ErrorDetails, PydanticCustomError

from ..errors import UserError
from ..progress import say
from .columns import score
from .example import Example, brief, check_unique_ids, csv_rows, exact_id, json_objects, parse_json, tab_separated_rows
from .metrics import METRICS, unsuitable

if TYPE_CHECKING:
    from .task import InputColumns

TASK_FILE = "task.json"
FORMATS = (".csv", ".tsv", ".jsonl", ".parquet")


def definition_path(data_root: Path, name: str) -> Path:
    return Path(data_root) / name / TASK_FILE


# ------------------------------------------------------------------------------------------- the definition


CONTROL = ("Cc", "Zl", "Zp")  # Unicode categories of control characters (tab, newline, NUL...) and line breaks


def escape_controls(text: str) -> str:
    """``text`` with every control character and line break written as its ``\\uXXXX`` escape: one line, every
    character visible."""
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in CONTROL else c for c in text)


def _printable(text: str) -> str:
    """A name or a label of ``task.json``: printable text. A tab, a newline or another control character would
    break the tab-separated prediction files, ``id2label`` and every message that shows it."""
    bad = next((c for c in text if unicodedata.category(c) in CONTROL), None)
    if bad is not None:
        raise PydanticCustomError(
            "control_character", "holds the control character U+{code}", {"code": f"{ord(bad):04X}"}
        )
    return text


Text = Annotated[str, AfterValidator(_printable)]  # every string of task.json


def _class_name(value: Any) -> str | int:
    """A class of ``labels``: a string (printable) or an integer (a boolean is neither)."""
    if isinstance(value, str):
        return _printable(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PydanticCustomError("class_type", "expected a class: a string or an integer")


COLUMN = "a column name (a non-empty string)"


class HfSource(BaseModel):
    """``hf``: a Hugging Face ``datasets`` source instead of data files."""

    model_config = ConfigDict(strict=True, extra="forbid")

    path: Text = Field(min_length=1, description="a hub name or a local folder (a non-empty string)")
    name: Text | None = Field(None, description="a configuration name, or null")
    splits: dict[Text, Text] = Field(
        min_length=1,
        description="an object mapping each split to its Hugging Face "
        'split, e.g. {"train": "train", "dev": "validation"}',
    )


class TaskDefinition(BaseModel):
    """Every field of ``task.json`` and its type (strict: a value of another JSON type is refused, never
    converted); :func:`check_definition` checks what the fields name."""

    model_config = ConfigDict(strict=True, extra="forbid")

    files: dict[Text, Text] | None = Field(
        None,
        min_length=1,
        description=('an object mapping each split to a file in the task\'s folder, e.g. {"train": "train.csv"}'),
    )
    text: Text = Field(min_length=1, description=COLUMN)
    text_pair: Text | None = Field(None, min_length=1, description=COLUMN + ", or null")
    label: Text = Field(min_length=1, description=COLUMN)
    labels: list[Annotated[str | int, PlainValidator(_class_name)]] | None = Field(
        None, description=("a list of at least two distinct classes (strings or integers) in the model's output order")
    )
    regression: bool = Field(False, description="true or false")
    id: Text | None = Field(None, min_length=1, description=COLUMN + ", or null")
    metrics: list[Text] | None = Field(
        None, min_length=1, description=(f"a non-empty list of metric names ({', '.join(METRICS)})")
    )
    main_metric: Text | None = Field(None, description="a metric name of metrics")
    dev_split: Text | None = Field(None, description="a split name of files")
    unlabelled: list[Text] | None = Field(None, min_length=1, description="a non-empty list of split names of files")
    hf: HfSource | None = Field(
        None, description=('an object {"path": NAME, "name": CONFIG (optional), "splits": {SPLIT: HF_SPLIT}}')
    )


# what a value of each JSON type is called when the schema expects it
_EXPECTED = {
    "string_type": "a string",
    "string_too_short": "a non-empty string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "int_type": "an integer",
    "model_type": "an object",
    "too_short": "a non-empty value",
}


def shown(value: Any) -> str:
    """A JSON (or Parquet) value as a message shows it: ``the string "false"``, ``the number 5``, ``the list
    ["a"]``, ``null``; long values shortened."""

    def short(text: str) -> str:
        return text if len(text) <= 60 else text[:57] + "..."

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {short(escape_controls(json.dumps(value, ensure_ascii=False)))}"
    if isinstance(value, (int, float)):
        return f"the number {short(repr(value))}"
    if isinstance(value, (list, dict)):
        kind = "list" if isinstance(value, list) else "object"
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (RecursionError, ValueError):
            text = "[...]" if kind == "list" else "{...}"
        return f"the {kind} {short(escape_controls(text))}"
    return f"a {type(value).__name__} value {brief(value)}"


def _field_name(loc: Iterable[str | int]) -> str:
    """``("hf", "splits", "dev")`` -> ``hf.splits.dev``; ``("labels", 2)`` -> ``labels[2]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return escape_controls(out)


def _schema_field(loc: Iterable[str | int]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """(the model holding the field ``loc`` names, its FieldInfo), or (the model, None) for an item or a key."""
    model: type[BaseModel] | None = TaskDefinition
    info: FieldInfo | None = None
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return model, None
        info = model.model_fields[part]
        model = next(
            (
                t
                for t in (info.annotation, *get_args(info.annotation))
                if isinstance(t, type) and issubclass(t, BaseModel)
            ),
            None,
        )
    return model, info


def _schema_error(error: ErrorDetails) -> str:
    """One line for pydantic's first error: the field, what it must be, what it is."""
    loc = error["loc"]
    field = _field_name(loc)
    if error["type"] == "control_character":
        key = loc[-1:] == ("[key]",)
        field = _field_name(loc[:-2] if key else loc)
        value = shown(error["input"]).replace("the string", "the key", 1) if key else shown(error["input"])
        return (
            f'field "{field}": {value} holds a control character (U+{error["ctx"]["code"]}); names and labels '
            f'in task.json are printable text'
        )
    if error["type"] == "extra_forbidden":
        model, _ = _schema_field(loc[:-1])
        assert model is not None  # only a model forbids extra fields: the error's parent is one
        parent = f" of {_field_name(loc[:-1])}" if loc[:-1] else ""
        return f'field "{field}": unknown (fields{parent}: {", ".join(model.model_fields)})'
    _, info = _schema_field(loc)
    expected = info.description if info is not None else None
    if error["type"] == "missing":
        return f'field "{field}": missing; expected {expected}'
    if not loc:
        return f"expected a JSON object (a task definition), got {shown(error['input'])}"
    if expected is None:
        expected = (
            error["msg"].removeprefix("expected ")
            if error["type"] == "class_type"
            else _EXPECTED.get(error["type"], error["msg"])
        )
    return f'field "{field}": expected {expected}, got {shown(error["input"])}'


def read_definition(path: Path) -> dict[str, Any]:
    """The checked definition of ``task.json`` (UTF-8, a byte-order mark allowed as in data files; JSON by
    :func:`~fine_tune.tasks.example.parse_json`'s rules: no field twice, nesting within Python's limit): one-line
    errors naming the file and the field."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"{path} is a folder; a task's definition is a file {TASK_FILE} (doc/methods.md, \"Your own data\")"
        )
    try:
        spec = parse_json(path.read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise UserError(f"{path}: not a readable task definition ({e.strerror or e})") from None
    except ValueError as e:  # not UTF-8, not JSON
        raise UserError(f"{path}: not a readable task definition ({e})") from None
    return check_definition(spec, str(path))


def check_definition(spec: Any, where: str) -> dict[str, Any]:
    """The definition ``spec`` (``task.json`` as JSON) checked: its types by :class:`TaskDefinition`, then what
    its fields name (splits, files, metrics, labels), each problem one line naming ``where`` and the field.
    Returns ``spec`` with ``files`` (a Hugging Face source's default), ``metrics`` and ``main_metric`` filled in."""
    try:
        d = TaskDefinition.model_validate(spec)
    except ValidationError as e:
        raise UserError(f"{where}: {_schema_error(e.errors()[0])}") from None

    def refuse(field: str, expected: str, value: Any) -> UserError:
        return UserError(f'{where}: field "{field}": expected {expected}, got {shown(value)}')

    files = d.files
    if d.hf is not None:
        files = files or {split: f"{split}.jsonl" for split in d.hf.splits}
        for split in d.hf.splits:
            if split not in files:
                raise refuse(f"hf.splits.{split}", f"a split of files ({', '.join(files)})", split)
    if files is None:
        raise UserError(
            f'{where}: field "files": missing; expected '
            f'{TaskDefinition.model_fields["files"].description} (or "hf": a Hugging Face source)'
        )
    formats = (".jsonl",) if d.hf is not None else FORMATS  # a Hugging Face split is written as JSON lines
    for split, name in files.items():
        if Path(name).suffix.lower() not in formats or "/" in name or "\\" in name or name.startswith("."):
            raise refuse(f"files.{split}", f"a file in the task's folder ending in {', '.join(formats)}", name)
        if d.hf is not None and split not in d.hf.splits:
            raise refuse(f"files.{split}", f"a split of hf.splits ({', '.join(d.hf.splits)})", split)
    columns = {"text": d.text, "text_pair": d.text_pair, "label": d.label, "id": d.id}
    named = [(f, c) for f, c in columns.items() if c is not None]
    for i, (field, column) in enumerate(named):  # a model must not read its label (or its id) as its text
        for other, same in named[:i]:
            if same == column:
                raise UserError(
                    f'{where}: field "{field}": the column {shown(column)} is field "{other}" too; '
                    f"each field names its own column"
                )
    if d.regression and d.labels is not None:
        raise UserError(
            f'{where}: field "labels": a regression task ("regression": true) has no classes; remove '
            f'"labels", or set "regression": false'
        )
    classes = f'{TaskDefinition.model_fields["labels"].description} (or "regression": true)'
    if not d.regression:
        if d.labels is None:
            raise UserError(f'{where}: field "labels": missing; expected {classes}')
        if len(d.labels) < 2 or len({str(x) for x in d.labels}) != len(d.labels):
            raise refuse("labels", classes, d.labels)
    metrics = d.metrics or (["pearson", "spearman"] if d.regression else ["accuracy"])
    _once("metrics", metrics, where)
    for i, m in enumerate(metrics):
        if m not in METRICS:
            raise refuse(f"metrics[{i}]", f"a metric name ({', '.join(METRICS)})", m)
        reason = unsuitable(m, d.regression, len(d.labels or []))
        if reason is not None:
            raise UserError(f'{where}: field "metrics[{i}]": {shown(m)} is {reason}')
    main = d.main_metric or metrics[0]
    if main not in metrics:
        raise refuse("main_metric", f"one of its metrics ({', '.join(metrics)})", main)
    _once("unlabelled", d.unlabelled or [], where)
    for i, split in enumerate(d.unlabelled or []):
        if split not in files:
            raise refuse(f"unlabelled[{i}]", f"a split of files ({', '.join(files)})", split)
    if d.dev_split is not None:
        labelled = [s for s in files if s not in (d.unlabelled or [s for s in files if s.startswith("test")])]
        if d.dev_split not in labelled:
            raise refuse("dev_split", f"a labelled split of files ({', '.join(labelled) or 'none'})", d.dev_split)
    return dict(spec, files=files, metrics=list(metrics), main_metric=main)


def _once(field: str, values: list[Any], where: str) -> None:
    """A list of names written each once: a name listed twice is refused naming both places (a metric twice
    was reported, and pooled in the results tables, twice)."""
    first: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value in first:
            raise UserError(
                f'{where}: field "{field}[{i}]": {shown(value)} is listed twice ({field}[{first[value]}] '
                f'and {field}[{i}]); list each once'
            )
        first[value] = i


# ---------------------------------------------------------------------------------------------- the files


def _table_rows(
    path: Path, cells_of_lines: Iterable[tuple[int, list[str]]], what: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """(where, row dict) of a file of cells under a header line; a row of another cell count is refused."""
    header: int | None = None
    names: list[str] = []
    for line_no, cells in cells_of_lines:
        if header is None:
            header, names = line_no, cells
            twice = sorted({c for c in cells if cells.count(c) > 1})
            if twice:
                raise UserError(f"{path}, line {line_no}: the header names {', '.join(map(repr, twice))} twice")
            continue
        if len(cells) != len(names):
            raise UserError(
                f"{path}, line {line_no}: {len(cells)} {what}, the header (line {header}) names {len(names)}"
            )
        yield f"{path}, line {line_no}", dict(zip(names, cells))


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row dict) of a Parquet file; a file pyarrow cannot read is one line naming it."""
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as e:
        raise UserError(
            f"{path}: not a readable Parquet file ({(str(e).splitlines() or [type(e).__name__])[0]})"
        ) from None
    for i, row in enumerate(rows):
        yield f"{path}, row {i + 1}", row


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row dict) of a data file, by its extension."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return json_objects(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    if suffix == ".tsv":
        return _table_rows(path, tab_separated_rows(path), "tab-separated cells (no quoting: one line, one row)")
    return _table_rows(path, csv_rows(path), "cells")


def _label_text(raw: Any) -> str:
    """A class label as ``labels`` writes it: a JSON boolean as ``true``/``false``, other values as text."""
    return json.dumps(raw) if isinstance(raw, bool) else str(raw)


def parse_user_file(path: Path, labelled: bool, *, spec: dict[str, Any]) -> list[Example]:
    """Rows of one of the task's files as :class:`Example`s; a missing column, a text that is not a string, an id
    that is not an integer, a label outside the set, a score that is not a number or a test row without its id
    names the file, the line (or row) and the column."""
    examples: list[Example] = []
    wheres: list[str] = []
    labels = [str(x) for x in spec.get("labels") or []]
    for where, row in _rows(Path(path)):

        def cell(column: str, required: bool = True, *, row: dict[str, Any] = row, where: str = where) -> Any:
            if column not in row or row[column] is None or row[column] == "":
                if required:
                    raise UserError(
                        f"{where}: no value in column {column!r} (columns: {escape_controls(', '.join(map(str, row)))})"
                    )
                return None
            return row[column]

        def text(column: str, *, where: str = where) -> str:
            value = cell(column)
            if not isinstance(value, str):
                raise UserError(f"{where}: column {column!r} holds {shown(value)}; a text column holds strings")
            return value

        idx = len(examples)
        if spec.get("id"):
            idx = exact_id(cell(spec["id"]), where, repr(spec["id"]))
        first = text(spec["text"])
        pair = spec.get("text_pair")
        pair = None if not pair else text(pair)
        label = None
        if labelled:
            raw = cell(spec["label"])
            if spec.get("regression"):
                if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                    raise UserError(
                        f"{where}: label {shown(raw)} in column {spec['label']!r} is not a number (a regression score)"
                    )
                label = score(raw, where, repr(spec["label"]))
            else:
                if _label_text(raw) not in labels:
                    raise UserError(
                        f"{where}: label {brief(raw)} in column {spec['label']!r} is not one of the "
                        f"task's labels ({', '.join(labels)})"
                    )
                label = labels.index(_label_text(raw))
        examples.append(Example(idx=idx, text=first, text_pair=pair, label=label))
        wheres.append(where)
    if not labelled:
        check_unique_ids(examples, Path(path), wheres)
    return examples


def parse_rows_to_predict(path: Path, columns: InputColumns) -> tuple[list[Example], str | None]:
    """The rows of a file to predict (``generate_test_prediction.py --predict_file``), read as a task's own data
    files are (:func:`parse_user_file`, by the extension: ``.csv`` by its quoting rules, ``.tsv`` without quoting,
    ``.jsonl``) with the task's :class:`~fine_tune.tasks.task.InputColumns`, unlabelled (a label column is ignored).
    The id column is used when the file has it (its header; a JSON-lines file: its first row), each id an integer
    and once; else each row's number from 0. Returns the rows and the id column used (None: row numbers). A file
    without rows, a missing text column, a malformed line: one line naming the file, the line and the column."""
    path = Path(path)
    first = next(iter(_rows(path)), None)
    if first is None:
        raise UserError(f"{path}: holds no rows to predict")
    id_column = columns.id if columns.id is not None and columns.id in first[1] else None
    spec = {"text": columns.text, "text_pair": columns.pair, "id": id_column}
    return parse_user_file(path, False, spec=spec), id_column


SOURCES_FILE = "hf-sources.json"  # in the task's folder: each fetched file's Hugging Face source and sha256


def hf_source(spec: dict[str, Any], split: str, labelled: bool) -> dict[str, Any]:
    """What decides the file a split of a Hugging Face source becomes (:func:`materialise`)."""
    hf = spec["hf"]
    return {
        "path": hf["path"],
        "name": hf.get("name"),
        "split": hf["splits"].get(split),
        "label": spec["label"],
        "labelled": labelled,
    }


def ensure_materialised(spec: dict[str, Any], split: str, path: Path, labelled: bool) -> None:
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
            raise UserError(
                f"{path} was fetched from {have.get('source')} and has been edited since; the task's hf "
                f"source is now {want}: move the file away to fetch it again, or restore task.json"
            )
        say(f"note: {path}: the task's hf source changed ({have.get('source')} -> {want}): fetching it again")
    materialise(spec, split, path, labelled)
    records = read_json_object(records_path) if records_path.is_file() else {}  # another split may have been added
    records[path.name] = {"source": want, "sha256": sha256_file(path)}
    try:
        atomic_write_json(records_path, records)
    except OSError as e:
        raise UserError(f"could not write {records_path}: {e.strerror or e}") from None


def hub_unreachable(path: str) -> str | None:
    """Why the Hugging Face hub does not answer for the dataset ``path``, from one request without retries (its
    timeout HF_HUB_ETAG_TIMEOUT, huggingface_hub's setting), or None when it answers (any HTTP status), when
    ``path`` is not a hub name (a local folder, or a path datasets reads as one: absolute, or with more than one
    ``/``), or in offline mode (HF_HUB_OFFLINE: the cache is read). ``datasets.load_dataset`` retries an
    unreachable hub five times over about 25 s, each retry a warning on stderr; asking once first turns that into
    one line at once."""
    import datasets.config
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    hub_name = not Path(path).exists() and not Path(path).is_absolute() and path.count("/") <= 1
    if not hub_name or datasets.config.HF_HUB_OFFLINE:
        return None
    url = huggingface_hub.hf_hub_url(
        path, datasets.config.REPOCARD_FILENAME, repo_type="dataset", endpoint=datasets.config.HF_ENDPOINT
    )
    try:
        huggingface_hub.get_hf_file_metadata(url, timeout=huggingface_hub.constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError:  # the hub answered (no such dataset, gated...): load_dataset says which
        return None
    except Exception as e:  # noqa: BLE001 - a network failure of any kind
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    return None


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub's and datasets' warnings (a retry of a request each) off stderr while a dataset loads: a
    failure is the one line :func:`materialise` says."""
    import datasets.utils.logging as datasets_logging
    import huggingface_hub.utils.logging as hub_logging

    levels = hub_logging.get_verbosity(), datasets_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    datasets_logging.set_verbosity_error()
    try:
        yield
    finally:
        hub_logging.set_verbosity(levels[0])
        datasets_logging.set_verbosity(levels[1])


def materialise(spec: dict[str, Any], split: str, path: Path, labelled: bool) -> None:
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
    unreachable = hub_unreachable(hf["path"])
    if unreachable is not None:
        raise UserError(
            f"could not load the Hugging Face dataset {name!r} split {hf_split!r}: the hub cannot be "
            f"reached ({unreachable}); a dataset in the local cache loads with HF_HUB_OFFLINE=1"
        )
    try:
        with _quiet_hub():
            ds = datasets.load_dataset(hf["path"], hf.get("name"), split=hf_split)
    except Exception as e:  # noqa: BLE001 - network, unknown name or split: one line
        raise UserError(
            f"could not load the Hugging Face dataset {name!r} split {hf_split!r}: "
            f"{(str(e).splitlines() or [type(e).__name__])[0]}"
        ) from None
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
        raise UserError(
            f"could not write {path} (the Hugging Face split {hf_split!r} as JSON lines): "
            f"{e.strerror or e}; make the data root writable, or write the file there yourself"
        ) from None
