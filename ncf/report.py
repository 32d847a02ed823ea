"""Tables for terminals and reports: every table is printed as markdown and saved as JSON beside it."""
from __future__ import annotations

from pathlib import Path

from ncf.io import atomic_path, write_json


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


def save_table(path: str | Path, rows: list[dict], title: str = "", columns: list[str] | None = None,
               extra: dict | None = None) -> str:
    """Write ``path``.md and ``path``.json (rows + ``extra``); return the markdown text."""
    path = Path(path)
    text = (f"## {title}\n\n" if title else "") + markdown_table(rows, columns) + "\n"
    with atomic_path(path.with_suffix(".md")) as tmp:
        tmp.write_text(text)
    write_json(path.with_suffix(".json"), {"title": title, "rows": rows, **(extra or {})})
    return text
