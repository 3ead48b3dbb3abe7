"""``--help`` of every entry script describes today's toolkit, prints each default once, and a misspelt name is
answered with the closest valid one (issue 32, item 7; doc/errors.md, "Help and suggestions").

Every help is produced in this process (no interpreter start-up, no model): each script's real parser, its
stdout captured. The one-line refusals with a suggestion are cases of tests/test_bad_inputs.py (``misspelt_*``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re

import pytest
from conftest import run_in_process

from fine_tune.errors import OneLineParser, UserError, closest_name, did_you_mean
from fine_tune.methods.registry import METHODS
from fine_tune.models.families import FAMILY_NAMES
from fine_tune.settings import FINE_TUNE, TASK_NAMES, flag

SCRIPTS = (
    "run_fine_tune.py",
    "run_fine_tune_eval.py",
    "run_fine_tune_gen_logits.py",
    "run_fine_tune_distill.py",
    "run_lad_distil.py",
    "run_lad_no_distil.py",
    "run_probing_lad.py",
    "run_alp_distil.py",
    "run_pkd_distill.py",
    "run_tinybert_distil.py",
    "run_minilm_distil.py",
    "run_distil.py",
    "generate_test_prediction.py",
    "export_model.py",
    "results_table.py",
    "make_submission.py",
    "download_data.py",
)
ONLINE = [name for name, cls in METHODS.items() if cls.online]
# text of the toolkit's first days, or of an era, that no help may print
STALE = (
    "BoolQ or QQP",
    "QQP.tsv / BoolQ.jsonl",
    "for boolq, ",
    "BoolQ and QQP",
    "-era",
    "era flag",
    "(default: None)",
    "(default: False)",
    "best accuracy",
    "before issue",
)


def options(help_text: str) -> dict[str, str]:
    """Each option of a --help (its first flag name) -> its help, wrapped lines joined with single spaces."""
    out, name = {}, None
    for line in help_text[help_text.index("\noptions:") :].splitlines():
        m = re.match(r"  (-\S+?)[ ,]", line + " ")
        if m:
            name = m.group(1)
            out[name] = line
        elif name is not None and line.startswith("   "):
            out[name] += " " + line
        else:
            name = None
    return {k: " ".join(v.split()) for k, v in out.items()}


def script_help(script: str, tmp_path, *before: str) -> str:
    proc = run_in_process(script, *before, "--help", data_root=tmp_path / "data", exp_root=tmp_path / "exp")
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, str]:
    """Every entry script's --help, and run_distil.py's for every method (``run_distil.py --method NAME``)."""
    tmp = tmp_path_factory.mktemp("help")
    out = {script: script_help(script, tmp) for script in SCRIPTS}
    out.update({f"run_distil.py --method {m}": script_help("run_distil.py", tmp, "--method", m) for m in ONLINE})
    return out


def test_every_help_describes_todays_toolkit(helps):
    assert len(helps) == len(SCRIPTS) + len(ONLINE)
    for script, text in helps.items():
        if script == "run_distil.py":  # without --method: what it does and the methods, no flags
            assert "doc/methods.md" in text and f"methods: {', '.join(ONLINE)};" in text, text
            continue
        described = text[: text.index("\noptions:")].split("\n\n", 1)[-1]
        assert described.strip() and ("doc/" in described or "README.md" in described), (script, described)
        for stale in STALE:
            assert stale not in text, (script, stale)
        flags = options(text)
        assert "--help" in flags or "-h" in flags, script
        for name, help_ in flags.items():
            said = re.sub(
                r"(?<!\w)'[^'\s]*'", "", help_
            )  # (a quoted 'default' is a value's name, not what it defaults to)
            assert said.lower().count("default") <= 1, (script, name, help_)  # a default is said once
        if "--task" in flags and script != "download_data.py":  # (download: its choices, minus mrpc's own source)
            assert all(re.search(rf"\b{t}\b", flags["--task"]) for t in TASK_NAMES), (script, flags["--task"])
        for family_flag in ("--model", "--tmodel"):
            if family_flag in flags:
                assert "{" + ",".join(FAMILY_NAMES) + "}" in flags[family_flag], (script, flags[family_flag])
    fine_tune = options(helps["run_fine_tune.py"])
    # a value default printed where the help does not say it; a default the help describes printed only there
    assert fine_tune["--lr"].endswith("(default: 3e-05)") and fine_tune["--padding_free"].endswith("(default: auto)")
    assert fine_tune["--num_class"].count("(default:") == 1 and "default: None" not in fine_tune["--num_class"]
    assert "(default:" not in fine_tune["--experiment"] and "(default:" not in fine_tune["--amp"]
    assert fine_tune["--device_id"].count("default") == 1 and "era" not in fine_tune["--device_id"]
    # the splits and the submission file said generally, each task's own named as an example
    assert "one of the task's splits, e.g. train" in fine_tune["--dataset"]
    predict = options(helps["generate_test_prediction.py"])
    assert "the task's official submission file" in predict["--dataset"]
    assert "the task's dev split" in predict["--select_on"] and "main metric" in predict["--ckpt"]
    assert "logits data set" in options(helps["run_fine_tune_distill.py"])["--dataset"]


def test_the_formatter_prints_each_default_once_for_any_flag():
    """The rule is the formatter's, not each flag's text: flags as other lanes add them (a None default with its
    meaning in the help, a value default, a described default, a switch, a literal %) go through the real parser
    builder of the entry scripts (cli.build_parser) and get it too."""
    from fine_tune.cli import build_parser

    @dataclasses.dataclass(frozen=True)
    class NewFlags:
        key = "new"
        laps: float = flag(None, "train for N epochs (exclusive with --total_step)")
        warm_fraction: float = flag(None, "warmup as a fraction of the steps, e.g. 0.1 = 10 % of them")
        send_to: str = flag("tensorboard", "where the scalars go", choices=("tensorboard", "none"))
        best_by: str = flag(None, "metric of the best checkpoint (default: the task's main metric)")
        patience: int = flag(3, "evaluations to wait (Default: three)")
        quiet: bool = flag(False, "print nothing")

    parser = build_parser("x.py", "What x does.\n\nDocs: doc/x.md.", (*FINE_TUNE, NewFlags))
    text = parser.format_help()
    flags = options(text)
    assert "What x does.\n\nDocs: doc/x.md." in text  # the description as written
    assert flags["--laps"].endswith("(exclusive with --total_step)")
    assert flags["--warm_fraction"].endswith("10 % of them")
    assert flags["--send_to"].endswith("where the scalars go (default: tensorboard)")
    assert flags["--best_by"].endswith("(default: the task's main metric)")
    assert flags["--patience"].endswith("(Default: three)")
    assert flags["--quiet"].endswith("print nothing")
    for name, help_ in flags.items():
        assert help_.lower().count("default") <= 1 and "default: None" not in help_, (name, help_)


def test_closest_name():
    assert closest_name("sst-2", TASK_NAMES) == "sst2" and closest_name("SST2", TASK_NAMES) == "sst2"
    assert closest_name("RTE-SuperGLUE", TASK_NAMES) == "rte_superglue"
    assert closest_name("squad", TASK_NAMES) is None and closest_name("qqp", TASK_NAMES) is None  # not misspelt
    assert closest_name("minlm", ONLINE) == "minilm" and closest_name("tiny_bert", ONLINE) == "tinybert"
    dev = {"validation": "val", "dev": "val"}
    assert closest_name("validation", ["train", "val", "test"], dev) == "val"
    assert closest_name("validation", ["train", "dev", "test"], dev) is None  # an alias of a split not there
    assert did_you_mean("dve", ["train", "dev", "test"]) == "did you mean dev? "
    assert did_you_mean("xyz", ["train", "dev", "test"]) == ""


def test_a_misspelt_name_is_answered_with_the_closest(tmp_path):
    from fine_tune.cli import parse_flags
    from fine_tune.methods.registry import get_method
    from fine_tune.tasks import TASKS, get_task

    # a task of your own, by its folder in the data root
    (tmp_path / "my_task").mkdir()
    (tmp_path / "my_task" / "task.json").write_text("{}")
    with pytest.raises(UserError, match=r"^--task 'my_tsak' is unknown; did you mean my_task\? valid tasks: "):
        get_task("my_tsak", tmp_path)
    # a split: misspelt, or another library's name of the dev split
    with pytest.raises(
        UserError,
        match=r"^--select_on 'validation_matched' is not a mnli split; did you mean "
        r"dev_matched\? valid",
    ):
        TASKS["mnli"].check_split("validation_matched", "--select_on")
    with pytest.raises(UserError, match=r"^--dataset 'validation' is not a cb split; did you mean val\? valid"):
        TASKS["cb"].check_split("validation")
    with pytest.raises(UserError, match=r"^unknown method 'minlm'; did you mean minilm\? methods: "):
        get_method("minlm")
    # a choice read from a --config file
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"experiment": "x", "task": "qqp", "ptrain_ver": "m", "padding": "Dynamic"}))
    with pytest.raises(
        UserError,
        match=r"field \"padding\": --padding takes one of dynamic, max_length, got "
        r"\"Dynamic\"; did you mean \"dynamic\"\?$",
    ):
        parse_flags("run_fine_tune.py", "", FINE_TUNE, ["--config", str(config)])
    # any flag with choices, one line, exit status 2
    parser = OneLineParser(prog="x.py")
    parser.add_argument("--format", choices=("hf", "onnx"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        parser.parse_args(["--format", "onxx"])
    assert stop.value.code == 2 and err.getvalue() == (
        "error: x.py: argument --format: invalid choice: 'onxx'; did you mean 'onnx'? (choose from 'hf', 'onnx') "
        "(see --help)\n"
    )
