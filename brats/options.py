"""Configs that describe their own command-line flags.

A config dataclass describes its own flags: a field made with :func:`option` carries its help
(and a flag name or choices where the field name or type does not say them), and its default
is the field's. :func:`build_parser` turns one or more configs into an ``argparse`` parser,
and :func:`parse_config` turns the parsed arguments back into the config. Nested config fields
(a ``PreprocessConfig`` inside an ``IngestConfig``) contribute their own options. So a
default, a choice list or a help text is written once, on the config; :mod:`brats.cli` holds
the parsers built this way.

Types map to flags as follows: ``bool`` is a switch (``--x``; a field that defaults to
``True`` gets a ``--no-...`` style flag that turns it off); ``int``, ``float``, ``str`` and
``Path`` take one value; ``X | None`` takes an ``X`` and defaults to ``None``; a
``StrEnum`` offers its values as choices; ``tuple[int, int, int]`` takes three numbers;
``tuple[str, ...]`` (or of ints) takes a comma-separated list; a class with a ``parse``
classmethod (:class:`brats.resources.Replicas`) takes one value, parsed by it.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

_CLI_KEY = "brats.options"
_NOT_AN_OPTION = "brats.options.internal"
T = TypeVar("T")


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | tuple[str, ...] | None = None,
    positional: bool = False,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that is also a command-line option.

    Args:
        default: the field's default; no default makes the option required.
        help: the option's help text (the default is appended to it).
        flag: the flag, when it is not ``--`` + the field name with ``-`` for ``_``.
        choices: allowed values, when the type does not give them (an enum does).
        metavar: how the value is shown in the usage line.
        positional: a positional argument instead of a flag.
        default_factory: as for :func:`dataclasses.field`.
    """
    spec = {
        "help": help,
        "flag": flag,
        "choices": tuple(choices) if choices is not None else None,
        "metavar": metavar,
        "positional": positional,
    }
    metadata = {_CLI_KEY: spec}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def internal(default: Any = None) -> Any:
    """A dataclass field that is never a command-line option (a value the job sets itself,
    such as a resolved label scheme), even when its type is a dataclass."""
    return dataclasses.field(default=default, metadata={_NOT_AN_OPTION: True})


@dataclasses.dataclass(frozen=True)
class _Option:
    """One field of a (possibly nested) config, as a parser option."""

    path: tuple[str, ...]
    """Field names from the outermost config down to this field."""
    kind: type
    """The field's type, ``None`` removed."""
    default: Any
    spec: dict[str, Any]

    @property
    def dest(self) -> str:
        return ".".join(self.path)

    @property
    def flag(self) -> str:
        return str(self.spec["flag"] or "--" + self.path[-1].replace("_", "-"))


def _options(cls: type, path: tuple[str, ...] = ()) -> list[_Option]:
    hints = typing.get_type_hints(cls)
    found: list[_Option] = []
    for f in dataclasses.fields(cls):
        if _NOT_AN_OPTION in f.metadata:
            continue
        kind = _without_none(hints[f.name])
        if _CLI_KEY in f.metadata:
            found.append(_Option((*path, f.name), kind, _default(f), f.metadata[_CLI_KEY]))
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            found.extend(_options(kind, (*path, f.name)))
    return found


def _without_none(hint: Any) -> Any:
    """``X`` for ``X | None``; any other type as it is."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _shown(value: Any) -> Any:
    """A default as the command line would spell it."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, tuple):
        return list(value)
    if dataclasses.is_dataclass(value) and hasattr(value, "parse"):
        return str(value)
    return value


def _add(parser: argparse.ArgumentParser, opt: _Option) -> None:
    spec, kind, default = opt.spec, opt.kind, opt.default
    required = default is dataclasses.MISSING
    text = spec["help"]
    if not required and default is not None and not isinstance(default, bool) and default != ():
        text = f"{text} (default: {_format_default(_shown(default))})"
    kwargs: dict[str, Any] = {"help": text, "dest": opt.dest}
    is_enum = isinstance(kind, type) and issubclass(kind, enum.Enum)
    if spec["metavar"] is not None:
        kwargs["metavar"] = spec["metavar"]
    elif kind is not bool and spec["choices"] is None and not is_enum:  # choices show alone
        kwargs["metavar"] = (
            opt.path[-1] if spec["positional"] else opt.flag[2:].upper().replace("-", "_")
        )
    origin = typing.get_origin(kind)
    if kind is bool:
        kwargs["action"] = "store_false" if default is True else "store_true"
    elif origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[T, ...]: a comma-separated list
            kwargs["type"] = _comma_list if args[0] is str else _typed_comma_list(args[0])
        else:
            kwargs.update(type=args[0], nargs=len(args))
    elif is_enum:
        kwargs.update(type=str, choices=[member.value for member in typing.cast(Any, kind)])
    elif isinstance(kind, type) and hasattr(kind, "parse"):  # a value type that parses text
        kwargs["type"] = kind.parse
    else:
        kwargs["type"] = kind
    if spec["choices"] is not None:
        kwargs["choices"] = list(spec["choices"])
    if spec["positional"]:
        parser.add_argument(opt.dest, **{k: v for k, v in kwargs.items() if k != "dest"})
        return
    if required:
        kwargs["required"] = True
    else:
        kwargs["default"] = _shown(default)
    parser.add_argument(opt.flag, **kwargs)


def _format_default(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _typed_comma_list(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(kind(part) for part in _comma_list(text))

    parse.__name__ = f"comma-separated {kind.__name__}s"
    return parse


def build_parser(prog: str, description: str, *configs: type) -> argparse.ArgumentParser:
    """A parser with the options of every config in ``configs``, in field order."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_options(parser, *configs)
    return parser


def parse_or_exit(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    make: Callable[[argparse.Namespace], T],
) -> tuple[argparse.Namespace, T]:
    """Parse ``argv`` and build a config with ``make``; a config that refuses the values is a
    usage error (exit 2, the reason printed), like a value argparse refuses."""
    args = parser.parse_args(argv)
    try:
        return args, make(args)
    except ValueError as err:
        parser.error(str(err))
        raise  # parser.error exits; this line is for the type checker


def add_options(parser: argparse.ArgumentParser, *configs: type) -> None:
    """Add the options of every config in ``configs`` to ``parser`` (or a subparser).

    Raises:
        TypeError: two fields claim one flag.
    """
    seen: dict[str, str] = {}
    for cls in configs:
        for opt in _options(cls):
            name = opt.dest if opt.spec["positional"] else opt.flag
            if name in seen:
                raise TypeError(f"{cls.__name__}.{opt.dest} repeats the option {name}")
            seen[name] = opt.dest
            _add(parser, opt)


def parse_config(cls: type[T], args: argparse.Namespace, **given: Any) -> T:
    """The ``cls`` instance the parsed ``args`` describe; ``given`` sets fields that are not
    options (or overrides them). Nested configs are built from their own options."""
    return _build(cls, args, (), given)


def _build(
    cls: type[T], args: argparse.Namespace, path: tuple[str, ...], given: dict[str, Any]
) -> T:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # cls is a dataclass
        if not path and f.name in given:
            values[f.name] = given[f.name]
            continue
        if _NOT_AN_OPTION in f.metadata:
            continue
        kind = _without_none(hints[f.name])
        dest = ".".join((*path, f.name))
        if _CLI_KEY in f.metadata:
            value = getattr(args, dest)
            if isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            values[f.name] = _build(kind, args, (*path, f.name), {})
    return cls(**values)
