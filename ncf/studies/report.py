"""A report directory's pages: ``index.md`` (the markdown the study wrote), ``index.html`` (the same, one
self-contained page: figures embedded as base64 PNG, tables sortable by clicking a header, readable
without JavaScript) and ``screenshot.png`` (its first screen, 1280x900, taken by headless Chromium).

    write_report(Path("reports/demo"), "# ncf demo report\\n\\n" + text)   # -> {"md": ..., "html": ..., ...}

The converter knows what our reports write and nothing more: ``#`` headings, paragraphs, ``-`` lists,
pipe tables (``ncf.io.markdown_table``), figures ``![alt](file.png)`` (paths relative to the report
directory), fenced and 4-space indented code blocks, and inline `code` and **bold**.
"""
from __future__ import annotations

import base64
import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ncf.io import DataError, UsageError, atomic_path, check_output

SCREEN = (1280, 900)   # the screenshot's window: the first screen of a laptop

STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.7em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;white-space:nowrap}td.num{text-align:right}
th{background:#f0f3f6;position:sticky;top:0}tr:nth-child(even) td{background:#fafafa}
th.sortable{cursor:pointer}th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
img{max-width:100%;display:block;margin:.6em 0}code,pre{background:#f4f4f4;font-size:13px}pre{padding:.6em;
overflow-x:auto}"""

# Click a header: sort that table's rows by the column (numbers as numbers, text such as '–' after them);
# click again: the other way.
SORT_JS = """document.querySelectorAll("table").forEach(t => t.querySelectorAll("th").forEach((th, i) => {
  th.classList.add("sortable");
  th.addEventListener("click", () => {
    const dir = th.dataset.dir === "asc" ? "desc" : "asc", body = t.tBodies[0];
    t.querySelectorAll("th").forEach(h => delete h.dataset.dir); th.dataset.dir = dir;
    const key = r => { const s = r.cells[i].textContent, n = Number(s.replace(/[,%+\\s]/g, "") || NaN);
                       return isNaN(n) ? s : n; };
    const cmp = (x, y) => typeof x !== typeof y ? (typeof x === "number" ? -1 : 1)
                          : (dir === "asc" ? 1 : -1) * (x < y ? -1 : x > y ? 1 : 0);
    [...body.rows].sort((a, b) => cmp(key(a), key(b))).forEach(r => body.append(r));
  });
}));"""


def write_report(out: Path, markdown: str) -> dict:
    """Write ``out``/index.md, index.html and screenshot.png; return their paths."""
    out = check_output(out, directory=True)
    chromium()
    paths = {"md": out / "index.md", "html": out / "index.html", "screenshot": out / "screenshot.png"}
    page = to_html(markdown, out)
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(markdown)
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(page)
    screenshot(paths["html"], paths["screenshot"])
    return paths


def chromium() -> str:
    """The Chromium binary (Debian's ``chromium`` package), or a UsageError saying how to install it."""
    found = shutil.which("chromium")
    if not found:
        raise UsageError("chromium not found on PATH: the HTML report's screenshot needs it; install it with "
                         "`apt-get install chromium` (`make setup` does this)")
    return found


def run_chromium(args: list[str], timeout_s: float = 120) -> str:
    """Headless Chromium with a throw-away profile; its stdout."""
    with tempfile.TemporaryDirectory(prefix="ncf-chromium-") as profile:
        r = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                            "--hide-scrollbars", *args], capture_output=True, text=True, timeout=timeout_s)
    if r.returncode:
        raise RuntimeError(f"chromium {' '.join(args)}: exit status {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


def screenshot(page: Path, path: Path) -> Path:
    """The first screen (``SCREEN``) of ``page`` as a PNG, atomically (Chromium takes the image type from
    the file name's suffix: it writes into a temporary directory beside ``path``)."""
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as d:
        shot = Path(d) / "screen.png"
        run_chromium([f"--screenshot={shot}", f"--window-size={SCREEN[0]},{SCREEN[1]}", Path(page).resolve().as_uri()])
        if not shot.exists() or shot.stat().st_size == 0:
            raise RuntimeError(f"chromium wrote no screenshot of {page}")
        os.replace(shot, path)
    return path


# ------------------------------------------------------------------------------------ markdown -> HTML
def to_html(markdown: str, base: Path) -> str:
    """One HTML page of ``markdown``; figures are read from paths relative to ``base``."""
    lines, body, i = markdown.splitlines(), [], 0
    title = next((ln[2:].strip() for ln in lines if ln.startswith("# ")), "report")
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            body.append("<pre>" + html.escape("\n".join(lines[i + 1:end])) + "</pre>")
            i = end + 1
        elif line.startswith("    "):
            j = _run(lines, i, lambda s: s.startswith("    ") or not s.strip())
            body.append("<pre>" + html.escape("\n".join(s[4:] for s in lines[i:j]).strip("\n")) + "</pre>")
            i = j
        elif m := re.match(r"(#{1,6}) (.*)", line):
            n = len(m[1])
            body.append(f"<h{n}>{_inline(m[2], base)}</h{n}>")
            i += 1
        elif line.startswith("|"):
            j = _run(lines, i, lambda s: s.startswith("|"))
            body.append(_table(lines[i:j], base))
            i = j
        elif line.startswith("- "):
            j = _run(lines, i, lambda s: s.startswith("- "))
            body.append("<ul>" + "".join(f"<li>{_inline(s[2:], base)}</li>" for s in lines[i:j]) + "</ul>")
            i = j
        else:
            j = _run(lines, i, lambda s: s.strip() and not re.match(r"(#|\||- |```|    )", s))
            body.append(f"<p>{_inline(' '.join(lines[i:j]), base)}</p>")
            i = j
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"\n<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + f"\n<script>{SORT_JS}</script>\n"
            "</body></html>\n")


def _run(lines: list[str], i: int, keep) -> int:
    """The index after the block of lines from ``i`` on that ``keep`` accepts."""
    j = i + 1
    while j < len(lines) and keep(lines[j]):
        j += 1
    return j


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?|–")   # as ncf.io.markdown_table writes them; right-aligned


def _table(rows: list[str], base: Path) -> str:
    head, body = _cells(rows[0]), [_cells(r) for r in rows[2:]]
    td = lambda c: f"<td class=num>{c}</td>" if NUMBER.fullmatch(c) else f"<td>{_inline(c, base)}</td>"  # noqa: E731
    return ("<table><thead><tr>" + "".join(f"<th>{_inline(c, base)}</th>" for c in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(map(td, r)) + "</tr>" for r in body) + "</tbody></table>")


def _inline(text: str, base: Path) -> str:
    """Escaped text with `code`, **bold** and figures ![alt](file.png) (embedded)."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for k, part in enumerate(parts):
        if k % 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part, quote=False)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        out.append(re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m: _figure(m[1], m[2], base), part))
    return "".join(out)


def _figure(alt: str, src: str, base: Path) -> str:
    path = base / html.unescape(src)
    try:
        data = base64.b64encode(path.read_bytes()).decode()
    except FileNotFoundError:
        raise DataError(f"{path}: the report's figure {src!r} does not exist") from None
    alt = alt.replace('"', "&quot;")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'
