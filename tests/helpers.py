"""Helpers shared by the tests."""
from __future__ import annotations

import html
import json
import re
import struct
import tempfile
from pathlib import Path

import numpy as np

from ncf.io import write_json
from ncf.trace_eval.format import MAX_CHUNK_INSNS, TraceReader, TraceWriter, file_info, sidecar_path

LEAD = 100  # the snapshot lead of the test datasets


def rewrite_trace(src, dst, edit=None, chunk_insns: int = MAX_CHUNK_INSNS, sidecar: bool = False):
    """Copy a recorded trace through TraceWriter. ``edit(chunk, regs, vals)`` may change the
    registers, memory values, access addresses (``chunk.mem["addr"]``) and which static instruction
    runs (``chunk.insn["sid"]``, any of the trace's) in place; the rest stays as recorded."""
    static = TraceReader(src)
    for _ in static.chunks(registers=False):   # the whole static table: an edit may use any instruction
        pass
    r = TraceReader(src)
    with TraceWriter(dst, r.flags, chunk_insns=chunk_insns) as w:
        for ch in r.chunks():
            regs, vals = ch.insn["regs"].copy(), ch.mem["val"].copy()
            if edit:
                edit(ch, regs, vals)
            for sid in np.unique(ch.insn["sid"]):
                w.define(int(sid), *static.static.code(int(sid)))
            minfo = np.log2(ch.mem["size"]).astype(np.uint8) | (ch.mem["store"].astype(np.uint8) << 7)
            w.add(ch.insn["sid"], ch.insn["nmem"], ch.mem["addr"], minfo, regs=regs, mval=vals)
    if sidecar:
        write_json(sidecar_path(dst), {"format_version": 1, "file": file_info(dst)})
    return dst


def train_until_epoch_two(cfg, monkeypatch) -> None:
    """Train ``cfg`` (a GNN) and let the run die in its second epoch, after epoch 1's checkpoint."""
    import pytest

    import ncf.model.train as train_mod

    real, calls = train_mod.evaluate_rows, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_mod, "evaluate_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(cfg, progress=False)
    monkeypatch.setattr(train_mod, "evaluate_rows", real)


# After the page's load event (and ``js``): how many images there are and how many the browser shows
# (complete, with a size), and every table's header and body cells, written to <body data-probe> for
# --dump-dom to show.
PROBE = """window.addEventListener("load", () => { %s
  const imgs = [...document.images], text = el => [...el.cells].map(c => c.textContent);
  document.body.dataset.probe = JSON.stringify({
    images: imgs.length, images_loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    image_sizes: imgs.map(i => [i.naturalWidth, i.naturalHeight]),
    tables: [...document.querySelectorAll("table")].map(t => ({
      header: t.tHead ? text(t.tHead.rows[0]) : [], rows: t.tBodies[0] ? [...t.tBodies[0].rows].map(text) : []})),
    leftover_markdown: (document.body.innerText.match(/!\\[|\\|---/g) || []).length});
});"""


def render_check(html_path, js: str = "") -> dict:
    """Load a copy of the page in headless Chromium, away from its directory (so only what it embeds can
    load); after ``js`` (run at the load event) report its images (how many the browser shows), its tables
    (header and body cells) and how much raw markdown is left in its text. Chromium shows a truncated PNG
    in part, from its intact header: ``images_whole`` counts the embedded PNGs that decode in full (Pillow)."""
    import base64
    import io

    from PIL import Image

    from ncf.studies.report import run_chromium

    page = Path(html_path).read_text()
    assert "</body>" in page, f"{html_path}: no </body>"
    with tempfile.TemporaryDirectory(prefix="render-check-") as d:
        copy = Path(d) / "page.html"
        copy.write_text(page.replace("</body>", f"<script>{PROBE % js}</script></body>"))
        dom = run_chromium(["--virtual-time-budget=10000", "--dump-dom", copy.as_uri()])
    m = re.search(r'<body[^>]*data-probe="([^"]*)"', dom)
    assert m, f"{html_path}: the probe did not run; chromium's DOM begins {dom[:500]!r}"
    r = json.loads(html.unescape(m[1]))
    r["images_whole"] = 0
    for data in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]*)"', page):
        try:
            Image.open(io.BytesIO(base64.b64decode(data))).load()
            r["images_whole"] += 1
        except OSError:   # truncated, corrupt, not an image
            pass
    return r


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG file, from its IHDR chunk."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path}: not a PNG"
    return struct.unpack(">II", head[16:24])
