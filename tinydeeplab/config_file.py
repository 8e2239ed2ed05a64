"""Run configs: the options of one ``tinydeeplab train`` run in a TOML file (``--config FILE.toml``).

Keys are the command's long option names without the dashes in front, spelled as on the command
line (``batch-size``, not ``batch_size``); values have the option's type, lists for options with
several values (``crop = [256, 352]``), booleans for flags::

    dataset = "camvid"
    data = "../shared/data/camvid"
    model = "medium"
    crop = [256, 352]
    lr = 0.05

An option given on the command line wins over the file's key. Each value goes through the same check
as on the command line; an unknown key or a bad value is a one-line :class:`OptionError` naming the
file and the key. Relative paths are relative to the working directory, as on the command line.
``train`` writes the run's effective options to ``OUT/config.toml`` (:func:`write_config`), so that
``tinydeeplab train --config OUT/config.toml --out NEW`` repeats the run.

>>> print(toml_text({"model": "tiny", "crop": [64, 64], "lr": 0.1, "flip": True}), end="")
model = "tiny"
crop = [64, 64]
lr = 0.1
flip = true
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .errors import OptionError

if sys.version_info >= (3, 11):
    import tomllib
else:                                                  # pragma: no cover - Python 3.10
    import tomli as tomllib

NOT_IN_FILES = ("config", "help")
"""Options that a config file cannot set."""


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """``{key: action}`` for the parser's long options (``--batch-size`` -> ``batch-size``)."""
    out = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt[2:] not in NOT_IN_FILES:
                out[opt[2:]] = action
    return out


def read_config(path) -> dict:
    """The table of a TOML file, or a one-line OptionError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise OptionError(f"--config {path}: file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise OptionError(f"--config {path}: not valid TOML: {err}") from None


def _convert(action: argparse.Action, key: str, value, where: str):
    """``value`` from the file, checked and converted as argparse would convert the option's text."""
    def one(v):
        if isinstance(v, bool) or isinstance(v, (dict, list)):
            raise OptionError(f"{where}: {key} = {_show(value)}: expected {_expected(action)}")
        if action.type is None and not isinstance(v, str):
            raise OptionError(f"{where}: {key} = {_show(value)}: expected a string")
        try:
            v = action.type(str(v)) if action.type is not None else v
        except (argparse.ArgumentTypeError, ValueError) as err:
            raise OptionError(f"{where}: {key} = {_show(value)}: {err}") from None
        if action.choices is not None and v not in action.choices:
            raise OptionError(f"{where}: {key} = {_show(value)}: choose from "
                              f"{', '.join(map(str, action.choices))}")
        return v

    if action.nargs == 0:                              # a flag: store_true
        if not isinstance(value, bool):
            raise OptionError(f"{where}: {key} = {_show(value)}: expected true or false")
        return value
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        if not isinstance(value, list):
            raise OptionError(f"{where}: {key} = {_show(value)}: expected a list, e.g. {key} = [...]")
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            raise OptionError(f"{where}: {key} = {_show(value)}: expected {action.nargs} values")
        if action.nargs == "+" and not value:
            raise OptionError(f"{where}: {key} = []: expected at least one value")
        return [one(v) for v in value]
    return one(value)


def _expected(action) -> str:
    return {"int": "an integer", "float": "a number"}.get(getattr(action.type, "__name__", ""), "a single value")


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, (str, list, bool)) else str(value)


def apply_config(parser: argparse.ArgumentParser, path) -> dict:
    """Make the keys of the TOML file ``path`` the defaults of ``parser`` (command-line flags still win;
    options the file sets are no longer required on the command line). Returns ``{dest: value}``."""
    table = read_config(path)
    options = _options(parser)
    where = f"--config {path}"
    defaults = {}
    for key, value in table.items():
        action = options.get(key)
        if action is None:
            hint = key.replace("_", "-")
            near = f" (did you mean {hint}?)" if hint in options else ""
            raise OptionError(f"{where}: unknown key {key!r}{near}; keys are the options of "
                              f"'{parser.prog}' without the leading --")
        defaults[action.dest] = _convert(action, key, value, where)
        action.required = False
    parser.set_defaults(**defaults)
    return defaults


def toml_text(values: dict) -> str:
    """``key = value`` lines for str / int / float / bool / list values (None values are left out)."""
    lines = []
    for key, value in values.items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(key, value)}")
    return "\n".join(lines) + "\n"


def _toml_value(key, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(key, v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OptionError(f"{key}: {value} cannot be written to a config file")
        return repr(value)
    return json.dumps(str(value))                      # a TOML basic string (JSON escapes are valid TOML)


def config_values(parser: argparse.ArgumentParser, args, *, exclude=()) -> dict:
    """The value of each long option of ``parser`` in ``args``, in the parser's order, keyed as in a file."""
    out = {key: getattr(args, action.dest, None) for key, action in _options(parser).items() if key not in exclude}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def write_config(path, values: dict, *, header: str = "") -> Path:
    """Write ``values`` as a TOML file, atomically (the old file stays whole until the new one is)."""
    from .atomic import write_text

    text = "".join(f"# {line}\n" for line in header.splitlines()) + toml_text(values)
    return write_text(path, text)
