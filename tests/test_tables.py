"""benchmarks.tables: the documents' result tables are what results/ holds, and follow it."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import tables


def test_every_committed_table_is_what_the_results_give():
    assert tables.stale() == [], "run python -m benchmarks.tables and commit the documents"


def test_each_document_holds_the_tables_it_is_meant_to():
    names = {
        doc: set(m["name"] for m in tables.BLOCK.finditer((tables.ROOT / doc).read_text())) for doc in tables.DOCUMENTS
    }
    assert names == {
        "README.md": {"summary"},
        "docs/performance.md": {"latency"},
        "model_repository/MODEL_CARD.md": {"quality"},
    }


def test_a_rerun_with_other_figures_rewrites_the_table(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(tables.RESULTS, results, ignore=shutil.ignore_patterns("*.png", "*.html", "*.csv"))
    path = results / "quality" / "illustrations" / "metrics.json"
    metrics = json.loads(path.read_text())
    row = next(r for r in metrics["rows"] if (r["method"], r["hints"]) == ("guided", "region:10"))
    row["metrics"]["psnr"]["mean"] = 31.234
    path.write_text(json.dumps(metrics))
    card = (tables.ROOT / "model_repository/MODEL_CARD.md").read_text()

    rewritten = tables.rewrite(card, results)

    assert rewritten != card
    assert "| `guided` | 10 region hints | 31.23 ± " in rewritten
    outside = lambda text: tables.BLOCK.sub("", text)  # noqa: E731
    assert outside(rewritten) == outside(card)


def test_a_block_naming_no_table_is_an_error():
    with pytest.raises(KeyError, match="no table named 'nonesuch'"):
        tables.rewrite("<!-- table nonesuch -->\n<!-- end table -->\n")
