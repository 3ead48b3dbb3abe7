"""The command line: flag groups (:mod:`fine_tune.settings`, and a method's own beside it) become an argparse
parser, and ``argv`` becomes typed :class:`~fine_tune.settings.Flags`.

An entry script calls :func:`parse_flags` with the groups it needs (a tuple of :mod:`fine_tune.settings`), or
:func:`parse_layerwise` with its method's name (the common layer-wise groups plus the method's registry
``flag_groups``), and gets a :class:`Flags`. ``--config FILE`` re-issues a run: its config.json's fields are the
flags' values, the command line overrides them. Flag syntax errors give one line on stderr and exit status 2;
:func:`run_main` turns a :class:`UserError` into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeGuard

from . import settings
from .errors import OneLineParser, UserError, closest_name, did_you_mean
from .settings import (
    FINE_TUNE,
    IDENTITY_FIELDS,
    LAYERWISE,
    NOT_FROM_CONFIG,
    OFFLINE_DISTILL,
    ConfigSource,
    FlagGroup,
    Flags,
)

# flags of the layer-wise scripts that a recipe's terms replace (run_distil.py --recipe refuses them given)
RECIPE_SETS = ("hard_weight", "soft_weight", "softmax_temp", "mu")


def layerwise_groups(method: str) -> tuple[type[FlagGroup], ...]:
    """The flag groups of a layer-wise script: the groups every one has, then the method's own (its registry
    entry's ``flag_groups``); a method's group of a common key (TinyBERT's defaults) replaces the common one."""
    from .methods.registry import get_method

    own = get_method(method).flag_groups
    keys = {g.key for g in own}
    return (*(g for g in LAYERWISE if g.key not in keys), *own)


def parse_layerwise(prog: str, description: str, method: str, argv: Sequence[str] | None = None) -> Flags:
    """The flags of a layer-wise script (:func:`layerwise_groups`)."""
    return parse_flags(prog, description, layerwise_groups(method), argv)


def parse_distil(prog: str, description: str, argv: Sequence[str] | None = None) -> tuple[str, Flags]:
    """``run_distil.py --method NAME ...``: the method named by ``--method`` (or by the ``method`` field of
    ``--config FILE``, a run's config.json), and the flags of its layer-wise script (:func:`parse_layerwise`)."""
    import json

    from .methods.registry import METHODS, extendable_methods

    argv = sys.argv[1:] if argv is None else list(argv)
    online = [name for name, cls in METHODS.items() if cls.online]
    pick = _Probe(prog=prog, add_help=False, allow_abbrev=False)  # --method out of argv; the rest is the script's
    pick.add_argument("--method")
    try:
        picked, rest = pick.parse_known_args(argv)
    except _ProbeFailed as e:  # --method without a name
        OneLineParser(prog=prog).error(str(e))
    name: str | None = picked.method
    if name is None and any(a == "--recipe" or a.startswith("--recipe=") for a in rest):
        name = "recipe"  # run_distil.py --recipe FILE: the recipe method
    config = (_given_flags(prog, (), rest) or {}).get("config")
    if name is None and config is not None:
        record = read_config(config)
        name = record.get("method") if isinstance(record.get("method"), str) else None
    if name is None:
        if "-h" in rest or "--help" in rest:
            sys.stdout.write(
                f"usage: {prog} --method METHOD [flags of the method's script]\n\n{description.strip()}\n\n"
                f"methods: {', '.join(online)}; `{prog} --method METHOD --help` lists its flags\n"
            )
            raise SystemExit(0)
        OneLineParser(prog=prog).error(f"--method is required (one of {', '.join(online)})")
    if name not in online:
        OneLineParser(prog=prog).error(
            f"--method {json.dumps(name)}: not a distillation method; "
            f"{did_you_mean(name, online)}methods: {', '.join(online)}"
        )
    groups = layerwise_groups(name)
    if name == "recipe":
        given = _given_flags(prog, groups, rest) or {}
        if isinstance(given.get("recipe"), str):
            base, names_teachers = _peek_recipe(given["recipe"])
        else:  # --config: the recipe the run recorded (its file is checked against its sha256 as it is read)
            recorded = read_config(config).get("recipe") if config is not None else None
            recorded = recorded if isinstance(recorded, dict) else {}
            base, names_teachers = recorded.get("method"), bool(recorded.get("teachers"))
        if isinstance(base, str) and base in extendable_methods():
            # method: NAME: that method's flags (its losses' weights among them) beside the recipe's
            groups = (*layerwise_groups(base), *(g for g in layerwise_groups(name) if g.key == "recipe"))
        else:  # the recipe's terms set what these flags set for the other methods
            clash = [f"--{k}" for k in RECIPE_SETS if given.get(k) is not None]
            if clash:
                OneLineParser(prog=prog).error(
                    f"{', '.join(clash)}: with --recipe the recipe's terms set the loss "
                    f"weights and temperatures; give them there (doc/methods.md, "
                    f"'Distillation recipes')"
                )
        if names_teachers:
            groups = tuple(settings.RecipeTeacherFlags if g.key == "teacher" else g for g in groups)
    return name, parse_flags(prog, description, groups, rest)


def _peek_recipe(path: str) -> tuple[str | None, bool]:
    """The recipe's ``method:`` and whether it names its teachers (they choose the script's flags); a recipe that
    cannot be read is the plan's to refuse, naming what is wrong."""
    from pathlib import Path

    from .recipes.format import load_recipe

    try:
        recipe = load_recipe(Path(path))
    except UserError:
        return None, False
    return recipe.method, bool(recipe.teachers)


class _ProbeFailed(Exception):
    pass


class _Probe(argparse.ArgumentParser):
    """The flags' parser without defaults, types and choices: what it returns is what the command line gives.
    Its errors are the real parser's to report."""

    def error(self, message: str) -> NoReturn:
        raise _ProbeFailed(message)


CONFIG_HELP = (
    "re-issue a run: every flag from FILE, a run's config.json; flags given on the command line "
    "override it (README.md, 'Re-run from a config')"
)


def _kind(f: dataclasses.Field[Any]) -> type:
    """What argparse converts a flag's value with: its annotation's type (the first of a union: ``int | None``, a flag
    whose default is None, is an int; a flag of several types gives its own ``type=``); a tuple flag's items are
    strings (``tuple[str, ...]``)."""
    if isinstance(f.type, type):
        return f.type
    name = str(f.type).split(" | ")[0].split("[")[0]
    return {"str": str, "int": int, "float": float, "bool": bool, "tuple": str}[name]


def build_parser(
    prog: str, description: str, groups: Sequence[type[FlagGroup]], *, required: bool = True, probe: bool = False
) -> argparse.ArgumentParser:
    """A parser with ``--config`` and the flags of ``groups`` (each flag in exactly one group). ``required=False``:
    no flag is required (``--config`` may give them; :func:`parse_flags` checks). ``probe``: the same flags without
    defaults, types or choices (:func:`_given_flags`)."""
    if probe:
        parser: argparse.ArgumentParser = _Probe(prog=prog, add_help=False)
        parser.add_argument("-h", "--help", action="store_true", default=argparse.SUPPRESS)
    else:
        parser = OneLineParser(prog=prog, description=description)  # errors.HelpFormatter: defaults once
    parser.add_argument_group("config").add_argument(
        "--config", metavar="FILE", help=CONFIG_HELP, default=argparse.SUPPRESS if probe else None
    )
    seen: set[str] = {"config"}
    for group in groups:
        g = parser.add_argument_group(group.key)
        for f in dataclasses.fields(group):
            if f.name in seen:
                raise ValueError(f"flag --{f.name} is in two groups of {prog}")
            seen.add(f.name)
            meta = dict(f.metadata)
            help_ = meta.pop("help", "")
            meta.pop("exclusive_with", None)
            kind = meta.pop("type", None) or _kind(f)
            if probe:
                shape = {"action": "store_true"} if _kind(f) is bool else {"nargs": meta.get("nargs")}
                g.add_argument(f"--{f.name}", default=argparse.SUPPRESS, **shape)
            elif _kind(f) is bool:
                g.add_argument(f"--{f.name}", action="store_true", default=f.default, help=help_)
            else:
                if not required:
                    meta.pop("required", None)
                g.add_argument(f"--{f.name}", type=kind, default=f.default, help=help_, **meta)
    return parser


def _given_flags(prog: str, groups: Sequence[type[FlagGroup]], argv: list[str]) -> dict[str, Any] | None:
    """The flags the command line gives (by name, their raw strings), parsed as the real parser parses them
    (``--flag=value``, unique abbreviations); None where it cannot be parsed (the real parser says why)."""
    try:
        given, _ = build_parser(prog, "", groups, probe=True).parse_known_args(argv)
    except _ProbeFailed:
        return None
    return {k: v for k, v in vars(given).items() if k != "help"}


def parse_flags(
    prog: str, description: str, groups: Sequence[type[FlagGroup]], argv: Sequence[str] | None = None
) -> Flags:
    """Parse ``argv`` into one instance per group; a bad value is a :class:`UserError` (one line, exit 2).

    ``--config FILE`` (a run's config.json): the file's fields are the flags' values, flags given on the command
    line override them, then every group validates the merged values as it validates flags. The result then has
    a ``rerun`` entry (:class:`ConfigSource`), so a training run records ``config_from`` and ``overrides``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    given = _given_flags(prog, groups, argv)
    with_config = given is not None and given.get("config") is not None
    parser = build_parser(prog, description, groups, required=not with_config)
    values = vars(parser.parse_args(argv))
    source = None
    config = values.pop("config")
    _refuse_exclusive(groups, set(given or ()), values)
    if config is not None:  # (the probe parsed argv: what it cannot parse, the parser above refuses)
        values, source = _merge_config(parser, groups, values, set(given or ()) - {"config"}, config)
    parsed = {group.key: group(**{f.name: values[f.name] for f in dataclasses.fields(group)}) for group in groups}
    if source is not None:
        parsed[source.key] = source
    return Flags(parsed)


def _exclusive_pairs(groups: Sequence[type[FlagGroup]]) -> list[tuple[str, str]]:
    """(flag, the flag it replaces) of every field with ``exclusive_with`` metadata (``--num_epochs`` sets
    ``--total_step``, ``--warmup_ratio`` sets ``--warmup_step``): the plan resolves the second from the first."""
    return [
        (f.name, f.metadata["exclusive_with"])
        for g in groups
        for f in dataclasses.fields(g)
        if "exclusive_with" in f.metadata
    ]


def _refuse_exclusive(groups: Sequence[type[FlagGroup]], given: set[str], values: dict[str, Any]) -> None:
    """Both flags of an exclusive pair given on the command line: one line naming both."""
    for name, other in _exclusive_pairs(groups):
        if name in given and other in given:
            raise UserError(
                f"--{name} {values[name]} and --{other} {values[other]}: give one or the other "
                f"(--{name} sets --{other})"
            )


def _all_flag_groups() -> list[type[FlagGroup]]:
    """Every flag group some script has: the common ones (:mod:`fine_tune.settings`) and every method's own."""
    from .methods.registry import METHODS

    own = [obj for obj in vars(settings).values() if _is_flag_group(obj)]
    return own + [g for method in METHODS.values() for g in method.flag_groups]


def _is_flag_group(obj: object) -> TypeGuard[type[FlagGroup]]:
    """A flag group class of :mod:`fine_tune.settings` (not the record of a ``--config`` re-run)."""
    return (
        isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and isinstance(getattr(obj, "key", None), str)
        and obj is not ConfigSource
    )


def _training_fields() -> set[str]:
    """The flags a training run records (Flags.record()) and the values it resolves."""
    from . import config as cfg
    from .methods.registry import METHODS

    groups = {*FINE_TUNE, *OFFLINE_DISTILL, *LAYERWISE, *(g for m in METHODS.values() for g in m.flag_groups)}
    return {f.name for g in groups for f in dataclasses.fields(g)} | set(cfg.RESOLVED_FIELDS)


def read_config(path: str) -> dict[str, Any]:
    """``--config FILE``: a JSON object; anything else one line naming the file."""
    from pathlib import Path

    from .io_utils import read_json_object

    if Path(path).is_dir():
        raise UserError(f"--config {path}: a folder, not a file (give the run's config.json)")
    try:
        return read_json_object(Path(path))
    except UserError as e:
        raise UserError(f"--config {e}") from None
    except OSError as e:
        raise UserError(f"--config {path}: cannot be read ({e.strerror})") from None


_WHAT = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _config_value(path: str, f: dataclasses.Field, value: Any) -> Any:
    """A config.json value for the flag ``f``, as the flag's type (a number for a float flag: a float); a value
    the flag could not take is one line naming the file and the field."""
    import json

    kind, nargs = _kind(f), f.metadata.get("nargs")
    if value is None and f.default is None:
        return None
    if kind is str and _recorded_file(value):  # (checked against its sha256 when the file's value is taken)
        return value["path"]
    parse = f.metadata.get("type")  # a flag of its own syntax (--tckpt: a step or best) reads a string as its flag
    if parse is not None and isinstance(value, str):
        try:
            return parse(value)
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise UserError(f"--config {path}: field \"{f.name}\": --{f.name} takes {e}") from None
    if nargs is not None:
        ok = (
            isinstance(value, list)
            and all(isinstance(v, str) for v in value)
            and (len(value) == nargs if isinstance(nargs, int) else len(value) >= 1)
        )
        what = f"a list of {nargs} strings" if isinstance(nargs, int) else "a list of strings"
    elif kind is bool:
        ok, what = isinstance(value, bool), _WHAT[bool]
    elif kind in (int, float):
        ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
        what = _WHAT[kind]
        value = kind(value) if ok else value
    else:
        ok, what = isinstance(value, kind), _WHAT.get(kind, kind.__name__)
    shown = json.dumps(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if not ok:
        raise UserError(f"--config {path}: field \"{f.name}\": --{f.name} takes {what}, got {shown}")
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        meant = closest_name(value, choices) if isinstance(value, str) else None
        hint = f"; did you mean {json.dumps(meant)}?" if meant is not None else ""
        raise UserError(
            f"--config {path}: field \"{f.name}\": --{f.name} takes one of {', '.join(map(str, choices))}, "
            f"got {shown}{hint}"
        )
    return value


def _recorded_file(value: Any) -> bool:
    """Whether a config.json value is an input file a run recorded in place of its flag's path: a mapping with the
    file's ``path`` and the ``sha256`` of its bytes (``--recipe``: the recipe, fine_tune/recipes/format.py)."""
    return isinstance(value, dict) and isinstance(value.get("path"), str) and isinstance(value.get("sha256"), str)


def _check_recorded_file(path: str, name: str, value: dict[str, Any]) -> None:
    """``--config``: the file a run recorded for ``--name`` still has the sha256 it trained with; else one line
    naming the file (a re-run would silently train on another file's content)."""
    from pathlib import Path

    from .io_utils import sha256_file

    file = value["path"]
    try:
        digest = sha256_file(Path(file))
    except OSError as e:
        raise UserError(
            f"--config {path}: field \"{name}\": {file} cannot be read ({e.strerror}); give --{name} FILE"
        ) from None
    if digest != value["sha256"]:
        raise UserError(
            f"--config {path}: field \"{name}\": {file} changed since the run (sha256 {digest[:12]}… "
            f"now, {value['sha256'][:12]}… recorded); restore it, or give --{name} {file} to run with "
            f"it as it is"
        )


def _merge_config(
    parser: argparse.ArgumentParser,
    groups: Sequence[type[FlagGroup]],
    values: dict[str, Any],
    given: set[str],
    path: str,
) -> tuple[dict[str, Any], ConfigSource]:
    """The flags' values from the config file ``path`` where the command line does not give them, and the record
    of where they came from. A field no script has as a flag and no run records is refused, a value a flag cannot
    take too; a field this script does not take (another script's flag, a resolved value) is ignored."""
    import os

    from . import config as cfg

    record = read_config(path)
    known = {f.name for g in _all_flag_groups() for f in dataclasses.fields(g)} | cfg.recorded_fields()
    for name in record:
        if name not in known:
            raise UserError(
                f"--config {path}: unknown field \"{name}\" (no script has a flag --{name}, and no run "
                f"records such a field)"
            )
    fields = {f.name: f for g in groups for f in dataclasses.fields(g)}
    trains = any(g.key == "optimiser" for g in groups)
    training_fields = set() if trains else _training_fields()
    from_file: dict[str, Any] = {}
    for name, value in record.items():
        if (
            name in fields
            and name not in NOT_FROM_CONFIG
            and (trains or name in IDENTITY_FIELDS or name not in training_fields)
        ):
            from_file[name] = _config_value(path, fields[name], value)
    for name, other in _exclusive_pairs(groups):  # the one the command line gives wins; else the file's own choice
        if name in given or (other not in given and from_file.get(name) is not None):
            from_file.pop(other, None)  # (a file's total_step of a --num_epochs run was resolved: resolved again)
        elif other in given:
            from_file.pop(name, None)
    merged = {**values, **{k: v for k, v in from_file.items() if k not in given}}
    for name in from_file.keys() - given:
        if _recorded_file(record[name]):
            _check_recorded_file(path, name, record[name])
    missing = [f"--{name}" for name, f in fields.items() if f.metadata.get("required") and merged[name] is None]
    if missing:  # argparse's message, as without --config, naming the file
        parser.error(
            f"the following arguments are required: {', '.join(missing)} (neither on the command line nor "
            f"in --config {path})"
        )
    overrides = {
        name: values[name]
        for name in fields
        if name in given and values[name] != from_file.get(name, fields[name].default)
    }
    return merged, ConfigSource(config_from=os.path.abspath(path), overrides=overrides)


def run_main(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run an entry point: a :class:`UserError` becomes one line on stderr and exit status 2. Under torchrun
    only rank 0 prints to stdout, and at the end the process group is closed and the worker exits at once with
    its status (engine/distributed.exit_process says why). Torch is imported here only under torchrun: a plain
    process imports it with the command's modules, after its flags are parsed (``--help`` and a refused flag need
    none)."""
    import os
    import signal

    from .progress import quiet_other_bars

    if hasattr(signal, "SIGXFSZ"):  # past the file-size limit a write fails (EFBIG, reported) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    finished, closed = False, False
    try:
        if "RANK" in os.environ:  # maybe a torchrun worker (distributed.launched_by_torchrun decides)
            from .engine import distributed

            distributed.silence_other_ranks()
        quiet_other_bars()
        main(argv)
        finished = True
        code = 0
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        code = e.exit_code
    except OSError as e:  # the one boundary for operating-system failures: one line naming the path, exit 2
        from .errors import os_error_line

        sys.stderr.write(f"error: {os_error_line(e)}\n")
        code = 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    finally:  # a process group exists only where the engine's distributed module was imported
        group = sys.modules.get(f"{__package__}.engine.distributed")
        closed = group is not None and group.close(synchronize=finished)
    if closed and group is not None:
        group.exit_process(code)
    return code
