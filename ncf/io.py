"""Small helpers every stage uses to write artifacts: atomic files and JSON with a format version."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


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
        raise ValueError(f"{path}: not valid {'YAML' if suffix in ('.yaml', '.yml') else 'JSON'}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config is a mapping of keys to values")
    return data


def save_config(cfg, path) -> Path:
    """A dataclass config as YAML (.yaml/.yml) or JSON, atomically."""
    from dataclasses import asdict

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(config_text(asdict(cfg), path.suffix))
    return path


def load_config(cls, path):
    """A dataclass config from a YAML or JSON file; unknown keys are an error naming the known ones."""
    from dataclasses import fields

    path = Path(path)
    data = parse_config(path.read_text(), path.suffix, path)
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{path}: unknown config keys {sorted(unknown)}; known: {sorted(known)}")
    return cls(**data)
