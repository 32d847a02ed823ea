"""The HTML report (ncf/studies/report.py): a page with real figures and tables, rendered by headless
Chromium, every figure decoded and every table there with its rows; sortable; the screenshot; and the
checker itself catches a broken figure."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from ncf.io import DataError, UsageError, figure, markdown_table, save_figure
from ncf.studies.report import to_html, write_report

from ..helpers import png_size, render_check

MPKI = [{"workload": "bzip2", "mpki": 4.25, "insns": 1_200_000}, {"workload": "xz", "mpki": 12.5, "insns": 900},
        {"workload": "gnugo", "mpki": None, "insns": 31_000}]
SITES = [{"site_pc": "0x40a1f0", "tage-sc-l": 120, "fused": -0.25},
         {"site_pc": "0x4009c4", "tage-sc-l": 7, "fused": 0.125},
         {"site_pc": "0x401000", "tage-sc-l": 1_500, "fused": 0.5}]


def report_text(tmp_path) -> str:
    for name, kind in (("a.png", "plot"), ("sub/b.png", "bar")):
        fig, ax = figure(figsize=(4, 3))
        getattr(ax, kind)([1, 2, 3], [3, 1, 2])
        save_figure(fig, tmp_path / name)
    return ("# test report\n\nA paragraph with `code` and **bold**\ncontinued.\n\n- one\n- two\n\n"
            "## MPKI\n\n" + markdown_table(MPKI) + "\n\n![first figure](a.png)\n\n## Sites\n\n"
            + markdown_table(SITES) + "\n\n### Commands\n\n    ncf demo --preset tiny\n    ncf experiment\n\n"
            "```\nconfusion | matrix\n```\n\n![second figure](sub/b.png)\n")


def test_page_renders_every_figure_and_table_and_the_screenshot_is_the_first_screen(tmp_path):
    paths = write_report(tmp_path, report_text(tmp_path))
    assert paths["md"].read_text() == report_text(tmp_path)
    r = render_check(paths["html"])
    assert r["images"] == r["images_loaded"] == r["images_whole"] == 2
    assert all(w > 100 and h > 100 for w, h in r["image_sizes"])
    assert [t["header"] for t in r["tables"]] == [["workload", "mpki", "insns"], ["site_pc", "tage-sc-l", "fused"]]
    assert r["tables"][0]["rows"] == [["bzip2", "4.25", "1,200,000"], ["xz", "12.5", "900"], ["gnugo", "–", "31,000"]]
    assert len(r["tables"][1]["rows"]) == len(SITES)
    assert r["leftover_markdown"] == 0
    assert png_size(paths["screenshot"]) == (1280, 900)
    assert not list(tmp_path.glob(".*"))                     # no temporary files left behind


def test_tables_are_there_without_javascript_and_figures_are_embedded(tmp_path):
    page = to_html(report_text(tmp_path), tmp_path)   # what write_report writes to index.html
    tags = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, dict(attrs)))

    Tags().feed(page)
    names = [t for t, _ in tags]
    assert names.count("table") == 2 and names.count("tr") == 2 + len(MPKI) + len(SITES)
    assert names.count("pre") == 2 and names.count("ul") == 1 and names.count("code") == 1
    imgs = [a["src"] for t, a in tags if t == "img"]
    assert len(imgs) == 2 and all(s.startswith("data:image/png;base64,") for s in imgs)


def test_clicking_a_header_sorts_numbers_as_numbers(tmp_path):
    page = write_report(tmp_path, report_text(tmp_path))["html"]
    click = 'document.querySelectorAll("table")[{}].querySelectorAll("th")[{}].click();'
    r = render_check(page, click.format(0, 1) * 2 + click.format(1, 1))
    assert [row[0] for row in r["tables"][0]["rows"]] == ["xz", "bzip2", "gnugo"]        # mpki descending, '–' last
    assert [row[1] for row in r["tables"][1]["rows"]] == ["7", "120", "1,500"]           # ascending, not as text


def test_the_checker_sees_broken_figures(tmp_path):
    text, page = report_text(tmp_path), tmp_path / "page.html"
    (tmp_path / "a.png").write_bytes(b"not a PNG at all")
    page.write_text(to_html(text, tmp_path))
    r = render_check(page)
    assert (r["images"], r["images_loaded"], r["images_whole"]) == (2, 1, 1)
    b = (tmp_path / "sub" / "b.png").read_bytes()
    (tmp_path / "sub" / "b.png").write_bytes(b[:len(b) // 2])   # truncated: Chromium shows its top half
    page.write_text(to_html(text, tmp_path))
    r = render_check(page)
    assert (r["images"], r["images_loaded"], r["images_whole"]) == (2, 1, 0)


def test_a_missing_figure_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="missing.png"):
        write_report(tmp_path, "# r\n\n![gone](missing.png)\n")
    assert not (tmp_path / "index.html").exists()


def test_without_chromium_the_error_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UsageError, match=r"apt-get install chromium.*make setup"):
        write_report(tmp_path, "# r\n\ntext\n")
