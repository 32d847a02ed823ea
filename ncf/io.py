"""Small helpers every stage uses: atomic files, JSON, file hashes, tables and figures, typed configs,
and the two kinds of bad input.

A stage that is given something it cannot use raises :class:`UsageError` (a bad argument value, an
input path that names nothing or the wrong kind of thing, an output that cannot be written) or
:class:`DataError` (an input whose content is unusable: corrupt, empty, not matching). ``ncf``
prints either as one line naming the thing and the problem, with exit status 2 or 1.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import typing
from dataclasses import asdict, fields
from pathlib import Path


class UsageError(ValueError):
    """A bad argument value, a missing input or an unwritable output; ``ncf`` exits with status 2."""


class DataError(ValueError):
    """An input whose content cannot be used (corrupt, empty, not matching); ``ncf`` exits with status 1."""


def at_least(cfg, **bounds) -> None:
    """A UsageError naming the first field of ``cfg`` below its lower bound (``name=bound``)."""
    for name, low in bounds.items():
        if getattr(cfg, name) < low:
            raise UsageError(f"{name} {getattr(cfg, name)}: must be >= {low}")


def check_output(path: str | os.PathLike, directory: bool = False) -> Path:
    """``path`` if an output file (``directory``: an output directory) can be written there.

    Called by a stage before its work starts: a directory where a file goes (or a file where a
    directory goes), a file among the parents, or a place without write access is a UsageError
    naming ``path``. Nothing is created.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        raise UsageError(f"{path}: is {'a file' if directory else 'a directory'}; the output here is a "
                         f"{'directory' if directory else 'file'}")
    place = path if path.is_dir() else path.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise UsageError(f"cannot write {path}: {place} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ncf-probe-", dir=place)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {place}: {e.strerror}") from None
    os.close(fd)
    os.unlink(probe)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted write leaves no half file: the temporary is removed on any exception.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=jsonable) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in ``path`` (an artifact's sidecar); other content is a DataError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a JSON object (found {type(data).__name__})")
    return data


def jsonable(o):
    """JSON form of numpy values and paths (``json.dumps(default=jsonable)``)."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def config_text(d: dict, suffix: str) -> str:
    """A config mapping as YAML (.yaml/.yml) or JSON text."""
    if suffix in (".yaml", ".yml"):
        import yaml
        return yaml.safe_dump(d, sort_keys=False)
    return json.dumps(d, indent=1) + "\n"


def parse_config(text: str, suffix: str, path) -> dict:
    """A config mapping from YAML or JSON text, with a clear error naming ``path``."""
    try:
        if suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml and json raise different types
        mark = getattr(e, "problem_mark", None)  # yaml's: where it went wrong (its str spans lines)
        why = f"{e.problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(e)
        raise UsageError(f"{path}: not valid {'YAML' if suffix in ('.yaml', '.yml') else 'JSON'}: {why}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a config is a mapping of keys to values")
    return data


def save_config(cfg, path) -> Path:
    """A dataclass config as YAML (.yaml/.yml) or JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(config_text(asdict(cfg), path.suffix))
    return path


def load_config(cls, path):
    """A dataclass config from a YAML or JSON file; unknown keys are an error naming the known ones,
    values of the wrong type an error naming the key."""
    return cls(**config_values(cls, path))


def config_values(cls, path) -> dict:
    """The typed values a config file sets for dataclass ``cls`` (only the keys it holds)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such config file" if not path.exists() else f"{path}: is not a config file")
    data = parse_config(path.read_text(), path.suffix, path)
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise UsageError(f"{path}: unknown config keys {sorted(unknown)}; known: {sorted(known)}")
    kinds = typing.get_type_hints(cls)
    return {k: typed(v, kinds[k], f"{path}: {k}") for k, v in data.items()}


def with_settings(cfg, settings: list[str]):
    """A copy of dataclass ``cfg`` with ``KEY=VALUE`` settings (``ncf train --set``) applied: each
    value parsed as its field's type, then the whole config validated again (``__post_init__``)."""
    kinds = typing.get_type_hints(type(cfg))
    values = asdict(cfg)
    for kv in settings:
        key, eq, text = kv.partition("=")
        if not eq:
            raise UsageError(f"--set {kv!r}: expected KEY=VALUE")
        if key not in values:
            raise UsageError(f"--set {key}: unknown setting; known: {', '.join(values)}")
        values[key] = typed(text, kinds[key], f"--set {key}")
    return type(cfg)(**values)


def settle(cls, base: dict | None = None, file=None, options: dict | None = None, settings=()):
    """The one way a config is made from its sources, each overriding the ones before it: the
    dataclass defaults, ``base`` (a preset), a config ``file`` (YAML or JSON), named command-line
    ``options`` (None: not given) and ``--set KEY=VALUE`` ``settings``; every value typed by its
    field, the result validated once (``__post_init__``)."""
    kinds = typing.get_type_hints(cls)
    values = config_values(cls, file) if file is not None else {}
    values.update({k: typed(v, kinds[k], f"--{k.replace('_', '-')}") for k, v in (options or {}).items()
                   if v is not None and k in kinds})
    cfg = cls(**{**(base or {}), **values})
    return with_settings(cfg, list(settings or ()))


TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def typed(value, kind, name: str):
    """``value`` as a value of ``kind`` (bool, int, float, str, list, ``X | None``; other kinds unchecked):
    text is parsed (bool: true/false, 1/0, yes/no, on/off; None: none/null; list: a YAML list such as
    ``[0, 10]`` or ``[]``), a value of another type is a UsageError naming ``name``."""
    if type(None) in typing.get_args(kind):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    text = isinstance(value, str)
    if kind is bool:
        if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
            return bool(value)
        if text and value.lower() in TRUE + FALSE:
            return value.lower() in TRUE
        raise UsageError(f"{name}: {value!r} is not a boolean (true/false, 1/0, yes/no)")
    if kind in (int, float):
        if text:
            try:
                return kind(value)
            except ValueError:
                pass
        elif type(value) is int or (kind is float and type(value) is float):
            return kind(value)
        raise UsageError(f"{name}: {value!r} is not {'an integer' if kind is int else 'a number'}")
    if kind is str and not text:
        raise UsageError(f"{name}: {value!r} is not text")
    if kind is list or typing.get_origin(kind) is list:
        if text:
            import yaml
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        if not isinstance(value, list):
            raise UsageError(f"{name}: {value!r} is not a list (write it as [a, b] or [])")
    return value


# ------------------------------------------------------------------------------------ hashes
def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's content, read in 4 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


# ------------------------------------------------------------------------------------ tables, figures
def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts -> a markdown table; floats get 4 significant digits, ints thousands separators."""
    columns = columns or (list(rows[0]) if rows else [])

    def fmt(v):
        if v is None:
            return "–"
        if isinstance(v, bool):
            return str(v)
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def save_table(path: str | os.PathLike, rows: list[dict], title: str = "", columns: list[str] | None = None,
               extra: dict | None = None) -> str:
    """Write ``path``.md and ``path``.json (title, rows + ``extra``); return the markdown text.
    A table holds results only: how long something took goes elsewhere (the demo's times.json)."""
    path = Path(path)
    text = (f"## {title}\n\n" if title else "") + markdown_table(rows, columns) + "\n"
    with atomic_path(path.with_suffix(".md")) as tmp:
        tmp.write_text(text)
    write_json(path.with_suffix(".json"), {"title": title, "rows": rows, **(extra or {})})
    return text


def figure(*args, **kwargs):
    """A matplotlib (figure, axes) for files (the Agg backend: no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)
