"""The map of where internalization pays: records of the map-<rows> parts -> one table, one plot."""

from __future__ import annotations

import json

from promptintern.results import MAP_SIZES, PARTS
from promptintern.scaling import map_markdown, map_points


def _run(bleu: float, *seeds: float) -> dict:
    return {"status": "completed", "tuned": {"metric": "bleu", "bleu": bleu},
            "seed_runs": {str(i + 1): {"status": "completed", "tuned": {"metric": "bleu", "bleu": b}}
                          for i, b in enumerate(seeds)}}


def _record(runs: dict, cis: dict) -> dict:
    return {"runs": runs, "provenance": {"model": "smollm2-135m", "command": "python -m flows.reproduce map-x"},
            "significance": {"baseline": "direct-no-template", "systems": {
                v: {"ci": ci, "p_value": None if v == "direct-no-template" else 0.04} for v, ci in cis.items()}}}


RECORDS = {
    16: _record({"direct-no-template": _run(10.0, 12.0), "promptintern": _run(11.0, 11.5, 12.5)},
                {"direct-no-template": 2.0, "promptintern": 2.5}),
    64: _record({"direct-no-template": _run(20.0, 21.0, 22.0), "promptintern": {"status": "failed"}},
                {"direct-no-template": 2.1}),
}


def test_every_size_is_a_part_with_its_rows_and_the_direct_baseline():
    for rows in MAP_SIZES:
        part = PARTS[f"map-{rows}"]
        assert part.settings["train_subset"] == rows and part.baseline == "direct-no-template"
        assert {"promptintern", "direct-no-template", "direct-template-kshot"} <= set(part.variants)


def test_map_points_average_the_seeds_and_keep_the_test_noise():
    points = {(p["variant"], p["rows"]): p for p in map_points(RECORDS)}
    assert set(points) == {("direct-no-template", 16), ("promptintern", 16), ("direct-no-template", 64)}
    ours = points[("promptintern", 16)]
    assert ours["scores"] == [11.0, 11.5, 12.5] and ours["mean"] == 11.666666666666666
    assert round(ours["sd"], 4) == 0.7638 and ours["ci"] == 2.5 and ours["p_value"] == 0.04
    table = map_markdown(list(points.values()), sizes=(16, 64))
    assert "| promptintern | **11.67** (11.00 / 11.50 / 12.50; sd 0.76) ± 2.50, p 0.040 | not run |" in table
    assert "| direct-no-template | **11.00** (10.00 / 12.00; sd 1.41) ± 2.00 | **21.00**" in table


def test_the_map_region_and_plot_come_from_the_records_alone(tmp_path):
    import flows.reproduce as rep

    doc = tmp_path / "docs" / "results.md"
    (doc.parent / "results").mkdir(parents=True)
    for rows, record in RECORDS.items():
        (doc.parent / "results" / f"map-{rows}.json").write_text(json.dumps(record))
    doc.write_text("# Results\n\nprose\n")
    assert rep.main(["map", "--render-only", "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Results\n\nprose\n") and "<!-- BEGIN map -->" in text
    assert "(results/map_metric_vs_rows.png)" in text
    assert (doc.parent / "results" / "map_metric_vs_rows.png").stat().st_size > 10_000
