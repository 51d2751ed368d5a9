"""docs/results.md's machinery: the equal-steps budget, the paper-layout tables, the reproduce flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptintern.config import preset
from promptintern.results import PARTS, Part, Table, gap_recovered, reference_markdown, replace_region, table_markdown
from promptintern.train import plan_batches
from promptintern.variants import variant_config


def _steps(cfg, rows: int) -> int:
    """Optimizer steps a config trains on ``rows`` training rows, summed over its stages."""
    per_stage = [len(plan_batches([10] * rows, cfg.train.batch_size, cfg.train.epochs_per_stage, s.stage))
                 for s in cfg.schedule.stages()]
    return sum(-(-n // cfg.train.grad_accum) for n in per_stage)


@pytest.mark.parametrize("variant", ["direct-template-kshot", "direct-no-template", "llmlingua-0.3",
                                     "promptintern-tau-floor-0.3", "schedule-exponential"])
def test_equal_steps_budget_gives_every_variant_promptinterns_steps(variant):
    reference = variant_config("promptintern", "cpu-repro")
    other = variant_config(variant, "cpu-repro")
    assert reference.train.total_epochs == other.train.total_epochs == 3.0
    assert other.train.epochs_per_stage == pytest.approx(3.0 / other.schedule.num_stages)
    assert _steps(other, 64) == _steps(reference, 64) == 48


def test_total_epochs_follows_a_changed_stage_count_and_leaves_other_presets_alone():
    cfg = preset("cpu-repro", {"schedule": {"num_stages": 4}, "train": {"total_epochs": 2}})
    assert cfg.train.epochs_per_stage == 0.5
    assert preset("cpu-demo").train.total_epochs is None and preset("cpu-demo").train.epochs_per_stage == 1.0
    # a dumped config validates to itself (what a deployment run gets back)
    assert type(cfg).model_validate(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize("value", [0, -1, "three"])
def test_a_bad_total_epochs_names_the_key(value):
    with pytest.raises(ValueError, match="train.total_epochs"):
        preset("cpu-repro", {"train": {"total_epochs": value}})


def test_gap_recovered_is_the_share_of_the_no_template_to_full_prompt_gap():
    assert gap_recovered(30.0, none=20.0, full=40.0) == 50.0
    assert gap_recovered(45.0, none=20.0, full=40.0) == 125.0
    assert gap_recovered(10.0, none=20.0, full=40.0) == -50.0
    assert gap_recovered(19.95, none=20.0, full=40.0) == 0.0  # shown as "0", not "-0"
    assert gap_recovered(30.0, none=25.0, full=25.0) is None
    assert gap_recovered(55.0, none=70.0, full=62.0) is None  # the full prompt below the query alone: no gap


def _metrics(bleu: float, tokens: float, seconds: float) -> dict:
    return {"metric": "bleu", "bleu": bleu, "exact_match": 1.0, "nlc2cmd": -0.5,
            "input_tokens_per_query": tokens, "seconds_per_instance": seconds}


def test_table_ratios_are_against_the_full_prompt_fine_tune():
    table = Table("t", (("Direct", ("direct-template-kshot", "direct-no-template")),
                        ("Ours", ("promptintern", "llmlingua2-0.3"))))
    runs = {
        "direct-template-kshot": {"status": "completed", "tuned": _metrics(40.0, 600.0, 3.0), "steps": 48},
        "direct-no-template": {"status": "completed", "tuned": _metrics(20.0, 30.0, 0.5), "steps": 48},
        "promptintern": {"status": "completed", "tuned": _metrics(35.0, 30.0, 0.75), "steps": 48,
                         "prompt_form": "query only"},
        "llmlingua2-0.3": {"status": "skipped", "reason": "variant 'llmlingua2-0.3' is unavailable: no | model"},
    }
    lines = table_markdown(table, runs).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {cells[1]: dict(zip(header, cells)) for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    ours = rows["promptintern"]
    assert ours["BLEU"] == "35.00" and ours["prompt at inference"] == "query only"
    assert ours["fewer tokens than template + k-shot"] == "20.0x"
    assert ours["speed-up vs template + k-shot"] == "4.00x"
    assert ours["gap recovered %"] == "75"
    assert rows["direct-template-kshot"]["gap recovered %"] == "100"
    assert rows["direct-no-template"]["group"] == "" and rows["direct-template-kshot"]["group"] == "Direct"
    # a skipped variant keeps its row and says why, without breaking the table
    assert rows["llmlingua2-0.3"]["prompt at inference"].startswith("*skipped: variant")
    assert len(rows["llmlingua2-0.3"]) == len(header)


def test_the_full_prompt_also_gets_its_template_cached_row_and_column():
    table = Table("t", (("Direct", ("direct-template-kshot", "direct-no-template")), ("Ours", ("promptintern",))))
    full = {**_metrics(40.0, 600.0, 1.0), "template_cached": {"seconds_per_instance": 1.0,
                                                               "recomputed_seconds_per_instance": 3.0}}
    runs = {"direct-template-kshot": {"status": "completed", "tuned": full, "steps": 48},
            "direct-no-template": {"status": "completed", "tuned": _metrics(20.0, 30.0, 0.5), "steps": 48},
            "promptintern": {"status": "completed", "tuned": _metrics(35.0, 30.0, 0.25), "steps": 48}}
    lines = table_markdown(table, runs).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {cells[1]: dict(zip(header, cells)) for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert list(rows) == ["direct-template-kshot", "direct-template-kshot, template cached", "direct-no-template",
                          "promptintern"]
    # the full prompt recomputes its template: 3 s; served from a prompt cache: 1 s, the same answers
    assert rows["direct-template-kshot"]["s / instance"] == "3.000"
    cached = rows["direct-template-kshot, template cached"]
    assert cached["s / instance"] == "1.000" and cached["BLEU"] == "40.00" and cached["group"] == ""
    assert cached["speed-up vs template + k-shot"] == "3.00x" and cached["speed-up vs template cached"] == "1.00x"
    ours = rows["promptintern"]
    assert ours["speed-up vs template + k-shot"] == "12.00x" and ours["speed-up vs template cached"] == "4.00x"


def test_a_record_made_before_the_cached_timing_says_why_its_table_has_no_cached_row():
    from promptintern.results import render_part

    part = Part("t", "nl2bash", (Table("t", (("Direct", ("direct-template-kshot", "direct-no-template")),)),))
    runs = {"direct-template-kshot": {"status": "completed", "tuned": _metrics(40.0, 600.0, 1.0), "steps": 48},
            "direct-no-template": {"status": "completed", "tuned": _metrics(20.0, 30.0, 0.5), "steps": 48}}
    record = {"runs": runs, "provenance": {"command": "python -m flows.reproduce t"}}
    assert 'No "direct-template-kshot, template cached" row' in render_part(part, record)
    runs["direct-template-kshot"]["tuned"]["template_cached"] = {"seconds_per_instance": 1.0,
                                                                 "recomputed_seconds_per_instance": 3.0}
    assert "No \"direct-template-kshot" not in render_part(part, record)


def test_the_table_shows_intervals_and_hides_a_gap_within_the_noise():
    table = Table("t", (("Direct", ("direct-template-kshot", "direct-no-template")), ("Ours", ("promptintern",))))
    runs = {v: {"status": "completed", "tuned": _metrics(bleu, 30.0, 0.5), "steps": 48}
            for v, bleu in (("direct-template-kshot", 20.8), ("direct-no-template", 20.6), ("promptintern", 17.4))}
    sig = {"baseline": "promptintern", "metric": "bleu", "systems": {
        "promptintern": {"ci": 2.89, "p_value": None}, "direct-template-kshot": {"ci": 2.9, "p_value": 0.007},
        "direct-no-template": {"ci": 3.12, "p_value": 0.002}}}
    lines = table_markdown(table, runs, sig).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {cells[1]: dict(zip(header, cells)) for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert rows["direct-no-template"]["± 95% CI"] == "3.12" and rows["direct-no-template"]["p vs promptintern"] == "0.002"
    assert rows["promptintern"]["p vs promptintern"] == ""
    # 20.8 vs 20.6 is inside +-3: the share of that gap would be noise (here -1700%)
    assert {r["gap recovered %"] for r in rows.values()} == {"within noise"}
    sig["systems"]["direct-template-kshot"]["ci"] = sig["systems"]["direct-no-template"]["ci"] = 0.1
    rows = table_markdown(table, runs, sig)
    assert "| -1600 |" in rows and "within noise" not in rows


def test_the_base_model_line_gives_every_metric_of_the_table():
    base = {**_metrics(14.1097, 662.26, 2.81), "exact_match": 0.6667, "nlc2cmd": -0.4873,
            "prompt_form": "full template + 2-shot"}
    assert reference_markdown(base) == ("Base model without fine-tuning, full template + 2-shot: BLEU 14.11, "
                                        "EM % 0.67, NLC2CMD -0.487; 662.3 input tokens / query, 2.810 s / instance.")
    assert reference_markdown(None) == ""


def test_the_plot_points_carry_each_rows_interval_and_the_untuned_base_model(tmp_path):
    from promptintern.report import plot_metric_vs_tokens
    from promptintern.results import plot_points

    runs = {"promptintern": {"tuned": _metrics(17.39, 24.5, 0.67)},
            "direct-no-template": {"tuned": _metrics(20.61, 24.5, 0.64)},
            "direct-template-kshot": {"status": "failed"}}
    record = {"runs": runs, "base_full_prompt": _metrics(14.11, 662.3, 2.81),
              "significance": {"systems": {"promptintern": {"ci": 2.89}, "direct-no-template": {"ci": 3.12}}}}
    points = {p["variant"]: p for p in plot_points(PARTS["nl2bash"], record)}
    assert set(points) == {"promptintern", "direct-no-template", "base model"}  # no model, no point
    assert (points["promptintern"]["ci"], points["direct-no-template"]["ci"]) == (2.89, 3.12)
    assert points["base model"]["value"] == 14.11 and points["base model"]["group"] == "untuned base model"
    assert "ci" not in points["base model"]  # its answers are not in the bootstrap: no bar
    path = plot_metric_vs_tokens(list(points.values()), tmp_path / "plot.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replace_region_keeps_the_prose_around_the_markers():
    doc = "# R\n\nintro\n\n<!-- BEGIN a -->\nold\n<!-- END a -->\n\nwhy a differs\n"
    new = replace_region(doc, "a", "new table")
    assert new == "# R\n\nintro\n\n<!-- BEGIN a -->\nnew table\n<!-- END a -->\n\nwhy a differs\n"
    appended = replace_region(new, "b", "b table")
    assert appended.startswith(new.rstrip()) and appended.endswith("<!-- BEGIN b -->\nb table\n<!-- END b -->\n")
    assert replace_region(appended, "b", "b2").count("BEGIN b") == 1


def test_every_part_runs_promptintern_and_both_ends_of_the_gap_first():
    for part in PARTS.values():
        ends = [v for v in ("direct-template-kshot", "direct-no-template") if v in part.variants]
        assert part.variants[:1 + len(ends)] == ["promptintern", *ends]
        assert part.baseline in part.variants
        assert len(part.variants) == len(set(part.variants))
    assert PARTS["nl2bash"].variants[:3] == ["promptintern", "direct-template-kshot", "direct-no-template"]


def test_reproduce_writes_the_part_and_a_rerun_gives_the_same_numbers(prefect_harness, tiny_data_dir, tmp_path):
    """The flow on the tiny model: every variant of the ablations part (schedules, banks, the two
    ends of the gap), its JSON record, the plot, and its region of a document whose prose stays."""
    from flows.reproduce import reproduce

    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    doc.write_text("# Results\n\nhand-written intro\n\n<!-- BEGIN ablations -->\nstale\n<!-- END ablations -->\n\n"
                   "hand-written discussion\n")
    args = dict(part="ablations", preset="tiny", overrides={"data_dir": str(tiny_data_dir)},
                artifact_root=str(tmp_path / "artifacts"), doc=str(doc))
    reproduce(**args)
    first = json.loads((tmp_path / "docs" / "results" / "ablations.json").read_text())
    text = doc.read_text()
    assert "hand-written intro" in text and "hand-written discussion" in text and "stale" not in text
    assert (tmp_path / "docs" / "results" / "ablations_metric_vs_tokens.png").stat().st_size > 1000
    assert "![metric vs input tokens, ablations](results/ablations_metric_vs_tokens.png)" in text
    assert "python -m flows.reproduce ablations --preset tiny --set data_dir=" in text
    runs = first["runs"]
    assert set(runs) == set(PARTS["ablations"].variants)
    assert all(r["status"] == "completed" for r in runs.values())
    shown = [v for t in PARTS["ablations"].tables for _, group in t.groups for v in group]
    for name in shown:  # the two ends of the gap run for the ratios only
        assert f"| {name} |" in text
    # bank size changes the shards the first stages train on: a different model
    assert runs["bank-25"]["stages"][0] != runs["bank-100"]["stages"][0]
    # bank-100 is PromptIntern's own configuration: the same boxes, the same predictions
    assert runs["bank-100"]["predictions_sha256"] == runs["promptintern"]["predictions_sha256"]
    assert first["base_full_prompt"]["label"] == "base-full-prompt"

    reproduce(**args)
    again = json.loads((tmp_path / "docs" / "results" / "ablations.json").read_text())
    for name, run in runs.items():
        assert again["runs"][name]["predictions_sha256"] == run["predictions_sha256"]
        assert again["runs"][name]["tuned"]["bleu"] == run["tuned"]["bleu"]

    # seconds per instance of every model of the part, re-measured side by side
    from flows.reproduce import retime_flow

    timed = retime_flow(parts=("ablations",), rows=2, repeats=2, artifact_root=args["artifact_root"], doc=str(doc))
    timing = timed["parts"]["ablations"]["timing"]
    # ... the forms with a template twice: recomputed for every batch, and prefilled once (cached)
    templated = {"ablations/base model", "ablations/direct-template-kshot"}
    assert set(timing) == ({f"ablations/{v}" for v in runs} | {"ablations/base model"}
                           | {f"{name}, template cached" for name in templated})
    assert all(len(t["all"]) == 2 and t["seconds_per_instance"] > 0 and t["rows"] == 2 for t in timing.values())
    for name in templated:
        assert timing[f"{name}, template cached"]["input_tokens"] == timing[name]["input_tokens"]
    # the query-only model reads far fewer tokens than the full-prompt one
    assert timing["ablations/promptintern"]["input_tokens"] < timing["ablations/direct-template-kshot"]["input_tokens"] / 5
    text = doc.read_text()
    assert "<!-- BEGIN timing -->\n#### ablations\n" in text and "\n| promptintern | query only |" in text
    assert "hand-written discussion" in text and "<!-- BEGIN ablations -->" in text
    # in another sitting, without the models (a fresh artifact root), the part keeps its timing
    again = retime_flow(parts=("ablations",), rows=2, repeats=2, artifact_root=str(tmp_path / "empty"), doc=str(doc))
    assert again["parts"]["ablations"] == timed["parts"]["ablations"]

    # every answer is published beside the tables, and PromptIntern is tested against every row
    for name, run in runs.items():
        published = (tmp_path / "docs" / "results" / "predictions" / "ablations" / f"{name}.jsonl").read_text()
        assert len(published.splitlines()) == run["tuned"]["n"] and '"reference"' in published
    sig = first["significance"]
    assert sig["baseline"] == "promptintern" and set(sig["systems"]) == set(runs)
    assert sig["systems"]["promptintern"]["score"] == pytest.approx(runs["promptintern"]["tuned"]["bleu"], abs=1e-3)
    assert sig["systems"]["bank-100"]["p_value"] == 1.0  # the same answers
    assert "| ± 95% CI | p vs promptintern |" in text

    # every row says where it came from; --resume keeps a row whose config is unchanged and runs
    # again one whose config digest differs (here: a digest made stale by hand)
    path = tmp_path / "docs" / "results" / "ablations.json"
    record = json.loads(path.read_text())
    assert all(r["config_digest"] and r["code"] and r["finished"] and len(r["load_average"]) == 2
               for r in record["runs"].values())
    record["runs"]["bank-25"]["tuned"]["bleu"] = 123.0  # a kept row is not recomputed
    record["runs"]["bank-50"]["config_digest"] = "stale"
    record["runs"]["bank-50"]["tuned"]["bleu"] = 456.0
    path.write_text(json.dumps(record))
    reproduce(**args, resume=True)
    resumed = json.loads(path.read_text())
    assert resumed["runs"]["bank-25"]["tuned"]["bleu"] == 123.0
    assert resumed["runs"]["bank-50"]["tuned"]["bleu"] == runs["bank-50"]["tuned"]["bleu"]
    assert resumed["runs"]["bank-50"]["config_digest"] == runs["bank-50"]["config_digest"]
    assert "kept from earlier invocations with --resume" in resumed["provenance"]["resumed"]
    assert "bank-50" not in resumed["provenance"]["resumed"]


def test_a_stopped_part_keeps_the_variants_it_finished(prefect_harness, tiny_data_dir, tmp_path, monkeypatch,
                                                        capsys):
    """The record is rewritten after every variant: a sweep stopped half-way loses only the variant
    it was running, and ``--resume`` goes on from there."""
    import flows.reproduce as rep

    real, calls = rep.promptintern, []

    def stopping(**kwargs):
        calls.append(kwargs["variant"])
        if len(calls) == 3:
            raise RuntimeError("the machine went away")
        return real(**kwargs)

    monkeypatch.setattr(rep, "promptintern", stopping)
    monkeypatch.setitem(rep.PARTS, "mini", Part("mini", "nl2bash", (Table("mini", (
        ("direct", ("direct-template-kshot", "direct-no-template")),
        ("ours", ("promptintern", "llmlingua2-0.3")))),)))  # LLMLingua-2 without its model: unavailable
    doc = tmp_path / "docs" / "results.md"
    args = dict(part="mini", preset="tiny", overrides={"data_dir": str(tiny_data_dir)},
                artifact_root=str(tmp_path / "artifacts"), doc=str(doc))
    with pytest.raises(RuntimeError, match="went away"):
        rep.reproduce(**args)
    record = json.loads((doc.parent / "results" / "mini.json").read_text())
    statuses = {v: r["status"] for v, r in record["runs"].items()}
    assert statuses == {"promptintern": "completed", "direct-template-kshot": "completed",
                        "direct-no-template": "pending", "llmlingua2-0.3": "skipped"}  # known before the stop
    assert "1 variants not run yet: direct-no-template" in record["provenance"]["pending"]
    assert "*pending*" in doc.read_text()

    calls.clear()
    rep.reproduce(**args, resume=True)
    assert calls == ["direct-no-template"]  # the finished two were not run again
    record = json.loads((doc.parent / "results" / "mini.json").read_text())
    assert [v for v, r in record["runs"].items() if r["status"] != "completed"] == ["llmlingua2-0.3"]
    assert "pending" not in record["provenance"]

    # the tables come back from the record alone, nothing run
    table = doc.read_text()
    doc.write_text("# Results\n\nprose\n")
    calls.clear()
    assert rep.main(["mini", "--render-only", "--doc", str(doc)]) == 0
    assert calls == [] and doc.read_text().startswith("# Results\n\nprose\n")
    assert doc.read_text().split("<!-- BEGIN mini -->")[1] == table.split("<!-- BEGIN mini -->")[1]
    with pytest.raises(FileNotFoundError, match="no record of 'ablations'"):
        rep.main(["ablations", "--render-only", "--doc", str(doc), "--debug"])
    # without --debug: the one message and exit status 2
    assert rep.main(["ablations", "--render-only", "--doc", str(doc)]) == 2
    assert "error: " in capsys.readouterr().err


def test_extra_training_seeds_add_per_seed_scores_and_tests(prefect_harness, tiny_data_dir, tmp_path, monkeypatch):
    """--extra-seeds 1: every variant runs again with train.seed 1; the table gives each row's scores
    per seed, their mean ± sd and a p-value per seed against the part's baseline; --resume keeps
    the seed runs too."""
    import flows.reproduce as rep

    real, calls = rep.promptintern, []

    def counting(**kwargs):
        calls.append((kwargs["variant"], kwargs["overrides"].get("train", {}).get("seed")))
        return real(**kwargs)

    monkeypatch.setattr(rep, "promptintern", counting)
    monkeypatch.setitem(rep.PARTS, "seeded", Part("seeded", "nl2bash", (Table("seeded", (
        ("direct", ("direct-no-template",)), ("ours", ("promptintern",)))),),
        settings={"train_subset": 8, "eval": {"test_subset": 3}}, baseline="direct-no-template"))
    doc = tmp_path / "docs" / "results.md"
    args = dict(part="seeded", preset="tiny", overrides={"data_dir": str(tiny_data_dir)},
                artifact_root=str(tmp_path / "artifacts"), doc=str(doc), extra_seeds=(1,))
    rep.reproduce(**args)
    assert calls == [("promptintern", None), ("direct-no-template", None), ("promptintern", 1),
                     ("direct-no-template", 1)]
    record = json.loads((doc.parent / "results" / "seeded.json").read_text())
    seeded = record["runs"]["promptintern"]["seed_runs"]["1"]
    assert seeded["status"] == "completed" and seeded["tuned"]["dataset"]["test_rows"] == 3
    assert (doc.parent / "results" / "predictions" / "seeded" / "promptintern.seed1.jsonl").is_file()
    sig = record["seed_significance"]["1"]
    assert sig["baseline"] == "direct-no-template" and 0 < sig["systems"]["promptintern"]["p_value"] <= 1
    text = doc.read_text()
    assert "BLEU per train seed (0 first)" in text and "mean ± sd" in text
    scores = [record["runs"]["promptintern"]["tuned"]["bleu"], seeded["tuned"]["bleu"]]
    assert " / ".join(f"{v:.2f}" for v in scores) in text

    calls.clear()
    rep.reproduce(**args, resume=True)
    assert calls == []  # every run, seeds included, kept from the record

    calls.clear()  # a second extra seed for one variant only; the other keeps its rows
    rep.reproduce(**{**args, "extra_seeds": (2,)}, resume=True, only=("promptintern",))
    assert calls == [("promptintern", 2)]
    record = json.loads((doc.parent / "results" / "seeded.json").read_text())
    assert set(record["runs"]["promptintern"]["seed_runs"]) == {"1", "2"}
    assert record["runs"]["direct-no-template"]["status"] == "completed"
    with pytest.raises(ValueError, match="not in part"):
        rep.reproduce(**args, only=("bank-25",))

    # --variants on a part with no record: the rows not asked for stay pending, and that is no failure
    calls.clear()
    alone = tmp_path / "alone" / "results.md"
    out = rep.reproduce(**{**args, "doc": str(alone)}, only=("direct-no-template",))
    assert calls == [("direct-no-template", None), ("direct-no-template", 1)]  # (its boxes cached above)
    assert {v: r["status"] for v, r in out["runs"].items()} == {"promptintern": "pending",
                                                                 "direct-no-template": "completed"}


def test_two_invocations_with_variants_beside_each_other_keep_each_others_rows():
    """``--resume --variants a`` and ``--resume --variants b`` on one part at once: each writes the
    record after every run, and neither erases what the other wrote since it began."""
    from flows.reproduce import _merged_with

    done = lambda digest, **seeds: {"status": "completed", "config_digest": digest,  # noqa: E731
                                    "seed_runs": {k: {"status": "completed", "bleu": v} for k, v in seeds.items()}}
    # A (--variants promptintern) began when the record held seed 0 of both; B then wrote direct's seed 1
    on_disk = {"promptintern": done("p"), "direct-no-template": done("d", **{"1": 20.0}), "distill": done("c")}
    mine = {"promptintern": done("p", **{"1": 18.0}), "direct-no-template": done("d"),
            "distill": {"status": "pending"}}
    merged = _merged_with(on_disk, mine, ("promptintern",))
    assert merged["promptintern"]["seed_runs"] == {"1": {"status": "completed", "bleu": 18.0}}
    assert merged["direct-no-template"]["seed_runs"]["1"]["bleu"] == 20.0  # B's, not A's stale copy
    assert merged["distill"]["status"] == "completed"  # pending here: the row on disk stays
    # the same row on both sides unions its seeds, ours winning a seed both made
    both = _merged_with({"promptintern": done("p", **{"1": 1.0, "2": 2.0})},
                        {"promptintern": done("p", **{"2": 3.0})}, ())
    assert {k: v["bleu"] for k, v in both["promptintern"]["seed_runs"].items()} == {"1": 1.0, "2": 3.0}
    # a row run again with another configuration does not inherit the old configuration's seeds
    again = _merged_with({"promptintern": done("old", **{"1": 1.0})}, {"promptintern": done("new")}, ())
    assert again["promptintern"]["seed_runs"] == {}


@pytest.mark.parametrize("argv, ran, timed", [
    (["timing"], [], ("nl2bash", "mbpp")),
    (["mbpp", "timing", "--resume"], ["mbpp"], ("mbpp",)),
    (["ablations"], ["ablations"], None),
    (["nl2bash", "ablations", "mbpp", "timing"], ["nl2bash", "ablations", "mbpp"], ("nl2bash", "mbpp")),  # make reproduce
    (["ablations", "timing"], ["ablations"], ("nl2bash", "mbpp")),  # no timing table of its own
])
def test_timing_re_times_the_parts_named_with_it_or_else_every_part(monkeypatch, argv, ran, timed):
    import flows.reproduce as rep

    calls = {"ran": [], "timed": None}
    monkeypatch.setattr(rep, "reproduce", lambda part, **kw: calls["ran"].append(part))
    monkeypatch.setattr(rep, "retime_flow", lambda parts, **kw: calls.__setitem__("timed", parts))
    assert rep.main(argv) == 0
    assert calls == {"ran": ran, "timed": timed}


def test_the_timing_sections_keep_the_documents_order_whichever_part_was_re_timed_last():
    from flows.reproduce import _timing_body

    def entry(part: str) -> dict:
        timing = {f"{part}/promptintern": {"input_tokens": 24.5, "output_tokens": 17.8, "seconds_per_instance": 0.7,
                                           "all": [0.7]}}
        return {"timing": timing, "forms": {f"{part}/promptintern": "query only"}, "provenance": {"finished": part}}

    body = _timing_body({"parts": {"mbpp": entry("mbpp"), "nl2bash": entry("nl2bash")}})  # mbpp re-timed last
    assert body.index("#### nl2bash") < body.index("#### mbpp")
    assert "- finished: mbpp" in body.split("#### mbpp")[1]  # each section keeps its own provenance


def test_published_records_describe_exact_match_as_computed():
    """EM collapses runs of whitespace before comparing (``evaluate.common.exact_match``): every
    published record and the document say so, not "exact string match"."""
    from promptintern.evaluate.common import exact_match

    assert exact_match(["ls  -a\n"], ["ls -a"]) == 100.0  # what is computed
    docs = Path(__file__).resolve().parents[1] / "docs"
    for path in sorted((docs / "results").glob("*.json")):
        scoring = json.loads(path.read_text()).get("provenance", {}).get("scoring", "")
        if "EM" in scoring:
            assert "EM: exact match after collapsing runs of whitespace" in scoring, path
    assert "exact string match" not in (docs / "results.md").read_text()


def test_the_tables_say_how_many_tokens_each_row_trained_on():
    """Equal optimizer steps are not equal compute: a templated step trains on far more tokens."""
    from promptintern.results import train_tokens

    old = {"stages": [{"tokens_per_second": 100.0, "seconds": 76.0}]}  # records before the exact count
    new = {"stages": [{"tokens": 30_000, "tokens_per_second": 1.0, "seconds": 1.0},
                      {"tokens": 36_200, "tokens_per_second": 1.0, "seconds": 1.0}]}
    assert train_tokens("direct-no-template", old) == "7.6k"
    assert train_tokens("promptintern", new) == "66.2k"  # the exact count wins over tokens/s x seconds
    assert train_tokens("context-distillation", old) == "7.6k + teacher"
    assert train_tokens("promptintern", {}) == ""
    table = Table("t", (("Direct", ("direct-no-template",)),))
    runs = {"direct-no-template": {"status": "completed", "tuned": _metrics(20.0, 30.0, 0.5), "steps": 48, **old}}
    lines = table_markdown(table, runs).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = dict(zip(header, [c.strip() for c in lines[2].strip("|").split("|")]))
    assert row["train steps"] == "48" and row["train tokens"] == "7.6k"


def test_settings_added_since_leave_the_digests_of_published_rows_unchanged():
    """The hardware section, eval.precision's None (= the hardware's dtype), gradient checkpointing,
    data-parallel processes and the 4-bit base came after map-64's token-budget rows: on the CPU in
    fp32, with those settings off, the rows' digests are the recorded ones, so ``--resume`` keeps them."""
    from flows.reproduce import config_digest, variant_config
    from promptintern.results import PARTS

    record = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "map-64.json").read_text())
    for variant in ("direct-no-template-26-passes", "direct-no-template-54-passes"):
        _, cfg = variant_config(PARTS["map-64"], variant)
        assert config_digest(cfg) == record["runs"][variant]["config_digest"], variant
        explicit = cfg.model_copy(update={"hardware": cfg.hardware.model_copy(update={"device": "cpu", "dtype": "fp32"}),
                                          "train": cfg.train.model_copy(update={"gradient_checkpointing": True,
                                                                                "processes": 2})})
        assert config_digest(explicit) == config_digest(cfg)  # same numbers up to floating-point order
        bf16 = cfg.model_copy(update={"hardware": cfg.hardware.model_copy(update={"device": "cpu", "dtype": "bf16"})})
        assert config_digest(bf16) != config_digest(cfg)  # other numbers: another row
