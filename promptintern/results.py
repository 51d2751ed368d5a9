"""The tables of ``docs/results.md``: the paper's layout, built from the runs' own metrics files.

``flows/reproduce.py`` runs the variants of one *part* (``nl2bash``, ``ablations``, ``mbpp``),
stores what each run measured in ``docs/results/<part>.json`` and calls ``render_part`` to rewrite
that part's tables in ``docs/results.md``, between the markers ``<!-- BEGIN <part> -->`` and
``<!-- END <part> -->``. The prose around the markers is written by people and left alone.

Ratios follow the paper: input tokens and seconds per instance against the fine-tuned model that
reads the full prompt (``direct-template-kshot``, "template + k-shot"), and the share of the gap
between fine-tuning without a template (``direct-no-template``) and with the full prompt that a
method recovers: ``100 * (m - none) / (full - none)``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from promptintern.report import CACHED, recomputed_seconds

FULL, NONE = "direct-template-kshot", "direct-no-template"


@dataclass(frozen=True)
class Table:
    """One table of a part: a title and its rows, grouped as in the paper."""

    title: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    note: str = ""

    @property
    def variants(self) -> list[str]:
        """The variants the table shows, in its order."""
        return [v for _, group in self.groups for v in group]


@dataclass(frozen=True)
class Part:
    """What one reproduce command runs: a dataset, its variants, the tables they fill."""

    name: str
    dataset: str
    tables: tuple[Table, ...]
    extra: tuple[str, ...] = field(default=())  # variants run only for the ratios (FULL / NONE)
    settings: dict = field(default_factory=dict)  # overrides every variant of the part runs with
    baseline: str = "promptintern"  # the row the paired bootstrap tests every other row against
    columns: tuple[tuple[str, str, str], ...] = ()  # the task's own metrics to show: (title, key, format)

    @property
    def variants(self) -> list[str]:
        """Every variant once; PromptIntern and the two ends of the gap first (the headline numbers)."""
        names = [v for t in self.tables for v in t.variants] + list(self.extra)
        first = [v for v in ("promptintern", FULL, NONE) if v in names]
        return list(dict.fromkeys(first + names))


COMPRESSION = ("Template compression",
               ("llmlingua-0.3", "longllmlingua-0.3", "llmlingua2-0.3", "selective-context-0.3",
                "gpt4-compression-0.3"))
DIRECT = ("Direct fine-tuning", ("direct-template-kshot", "direct-template-0.6-halfk",
                                 "direct-template-only", "direct-no-template"))
OURS = ("PromptIntern", ("promptintern",))

# The dev parts' last group: the teacher's answers to unlabeled queries, and the steps they take
UNLABELED_GROUP = ("With unlabeled queries", ("context-distillation-unlabeled", "direct-no-template-27-passes"))
UNLABELED_NOTE = ("the teacher (the full-prompt fine-tune) also answers 512 training queries that are not the 64 "
                  "rows, and the student trains 3 passes over the rows plus the answers it keeps; direct fine-tuning "
                  "beside it is given as many steps (27 passes over the 64 rows).")

PARTS: dict[str, Part] = {
    "nl2bash": Part("nl2bash", "nl2bash", (
        Table("NL2Bash: methods (paper Table 1 layout)", (COMPRESSION, DIRECT, OURS),
              note="Template compression: the template compressed to rate 0.3 once, no shots, fine-tuned "
                   "and evaluated on that prompt. Direct fine-tuning: one stage on the prompt named."),
        Table("NL2Bash: ablations of PromptIntern (paper Table 4 layout)", (
            ("PromptIntern", ("promptintern",)),
            ("ablations", ("promptintern-tau-floor-0.3", "no-example-absorption", "no-template-compression")),
        )),
    )),
    "ablations": Part("ablations", "nl2bash", (
        Table("NL2Bash: schedule patterns (paper Figure 3 / Table 5)", (
            ("schedule", ("promptintern", "schedule-exponential", "schedule-inverse-exponential")),)),
        Table("NL2Bash: retrieval bank size (paper Table 6)", (
            ("bank", ("bank-25", "bank-50", "bank-100")),)),
    ), extra=(FULL, NONE)),
    "mbpp": Part("mbpp", "mbpp", (
        Table("MBPP: Pass@1 in the sandbox (paper Table 1 layout, three methods)", (
            ("Direct fine-tuning", (FULL, NONE)), OURS)),
    )),
    # The curricula of promptintern.variants, chosen on the dev split (first 300 of 609 rows):
    # every row trains as many optimizer steps as PromptIntern, and is tested against fine-tuning
    # on the query alone at those steps.
    "curricula-dev": Part("curricula-dev", "nl2bash", (
        Table("NL2Bash dev split: curricula at equal optimizer steps", (
            ("Direct fine-tuning", (NONE,)),
            ("PromptIntern (paper)", ("promptintern",)),
            ("Curricula", ("null-curriculum", "promptintern-one-optimizer", "promptintern-wsd",
                           "promptintern-final-heavy", "promptintern-replay", "promptintern-adaptive",
                           "promptintern-distill")),
            ("Context distillation", ("context-distillation",)),
            UNLABELED_GROUP,
        ), note="Every row: 64 training rows, the same optimizer steps, except the last group: " + UNLABELED_NOTE
                + " Scored on the first 300 rows of "
                "the dev split, which chooses the settings (the test split is scored once per final "
                "configuration). null-curriculum: PromptIntern's stages and restarts, every stage query-only."),
    # the untuned model's full-prompt benchmark (25 min on dev) chooses nothing: left out here
    ), settings={"eval": {"test_split": "dev", "test_subset": 300, "baseline_full_prompt": False}}, baseline=NONE),
}
# The second view: the paper's own budget for NL2Bash, 12 passes over the rows (192 optimizer
# steps at 64 rows) instead of 3, for every curriculum.
# The full-prompt fine-tune is a row here too (context distillation trains it as its teacher, so it
# costs one benchmark): at 12 passes on orb-cli, fine-tuning on the query alone overtook it.
PARTS["curricula-dev-12-epochs"] = Part(
    "curricula-dev-12-epochs", "nl2bash",
    tuple(Table(t.title.replace("equal optimizer steps", "the paper's budget, 12 passes (192 steps)"),
                tuple((name, (NONE, FULL) if group == (NONE,) else group) for name, group in t.groups),
                t.note.replace("the same optimizer steps", "the same 192 optimizer steps"))
          for t in PARTS["curricula-dev"].tables),
    settings={**PARTS["curricula-dev"].settings, "train": {"total_epochs": 12.0}}, baseline=NONE)

# Where internalization pays (``promptintern.scaling``): the same comparison at 16 to 1,024 training
# rows, scored on the test split, one part per size so each can be run, resumed and seeded alone.
# context-distillation is the curriculum with the best mean over the dev split's two seeds
# (curricula-dev). The untuned model does not depend on the training rows: its benchmarks (12 min
# with the full prompt) are the nl2bash part's, not repeated at each size.
MAP_SIZES = (16, 64, 256, 1024)
MAP_BEST_CURRICULUM = "context-distillation"
MAP_VARIANTS = (NONE, FULL, "promptintern", MAP_BEST_CURRICULUM)
# At 64 rows, also fine-tuning on the query alone given PromptIntern's and context distillation's
# training tokens (more passes over the same rows): is their difference the method or the compute?
MAP_TOKEN_BUDGETS = {64: ("direct-no-template-26-passes", "direct-no-template-54-passes")}
for _rows in MAP_SIZES:
    _budgets = (("Direct fine-tuning at their training tokens", MAP_TOKEN_BUDGETS[_rows]),) \
        if _rows in MAP_TOKEN_BUDGETS else ()
    PARTS[f"map-{_rows}"] = Part(f"map-{_rows}", "nl2bash", (
        Table(f"NL2Bash, {_rows} training rows, equal optimizer steps", (
            ("Direct fine-tuning", (NONE, FULL)), ("PromptIntern", ("promptintern",)),
            ("Best curriculum on the dev split", (MAP_BEST_CURRICULUM,)), *_budgets),
            note="The last group trains for more optimizer steps than the others: on as many training tokens "
                 "as PromptIntern (26 passes) and as context distillation with its teacher (54 passes)."
            if _budgets else ""),),
        settings={"train_subset": _rows, "eval": {"baseline_full_prompt": False, "baseline_query_only": False}},
        baseline=NONE)

# MBPP for the final configurations: the map's four rows at the CPU presets' 64 training rows, all
# 500 test tasks (the untuned model's benchmarks are the mbpp part's, not repeated).
PARTS["mbpp-final"] = Part("mbpp-final", "mbpp", (
    Table("MBPP: the final configurations at equal optimizer steps, 64 training rows", (
        ("Direct fine-tuning", (NONE, FULL)), ("PromptIntern", ("promptintern",)),
        ("Best curriculum on the dev split", (MAP_BEST_CURRICULUM,)))),),
    settings={"eval": {"baseline_full_prompt": False, "baseline_query_only": False}}, baseline=NONE)

# The same comparison on a task whose template carries what the answers need (examples/orb-cli: a
# made-up tool whose subcommand and option names are written only in the template).
# (relative to the repository root, where the reproduce command runs: records stay portable)
PARTS["orb-cli"] = Part("orb-cli", "examples/orb-cli/task.yaml", (
    Table("orb-cli (generated, the template is the tool's only documentation), 64 training rows, equal steps", (
        ("Direct fine-tuning", (NONE, FULL)), ("PromptIntern", ("promptintern",))),
        note="EM: exact match after collapsing whitespace; subcommand: the right subcommand; option F1: the "
             "options (flags with their values) against the reference's (examples/orb-cli/orb_metric.py)."),),
    baseline=NONE, columns=(("subcommand %", "subcommand", "{:.2f}"), ("option F1 %", "option_f1", "{:.2f}")))

# ... and its curricula, chosen on its dev split (200 rows)
# (one-optimizer, the clear loser on NL2Bash's dev split, is left out)
PARTS["orb-cli-dev"] = Part("orb-cli-dev", "examples/orb-cli/task.yaml", (
    Table("orb-cli dev split: curricula at equal optimizer steps, 64 training rows", (
        ("Direct fine-tuning", (NONE,)),
        ("PromptIntern (paper)", ("promptintern",)),
        ("Curricula", ("null-curriculum", "promptintern-wsd", "promptintern-final-heavy", "promptintern-replay",
                       "promptintern-adaptive", "promptintern-distill")),
        ("Context distillation", ("context-distillation",)),
        UNLABELED_GROUP,
    ), note="The last group: " + UNLABELED_NOTE + " Scored on the first 168 of the 200 dev rows (the last 32 are promptintern-adaptive's probe rows), "
            "which choose the settings; the test split is scored once per final configuration (the orb-cli "
            "table above)."),),
    settings={"eval": {"test_split": "dev", "test_subset": 168, "baseline_full_prompt": False}}, baseline=NONE,
    columns=PARTS["orb-cli"].columns)

# ... and at the paper's budget (12 passes over the rows, 192 steps) instead of 3: on its dev split,
# fine-tuning on the request alone for 27 passes answered 70% exactly against 28% at 3
PARTS["orb-cli-dev-12-epochs"] = Part("orb-cli-dev-12-epochs", "examples/orb-cli/task.yaml", (
    Table("orb-cli dev split: the paper's budget, 12 passes (192 steps), 64 training rows", (
        ("Direct fine-tuning", (NONE, FULL)), ("PromptIntern (paper)", ("promptintern",)),
        ("Context distillation", ("context-distillation",))),
        note="Every row: 192 optimizer steps (12 passes over the 64 rows); scored on the first 168 of the 200 dev "
             "rows, as the table above."),),
    settings={**PARTS["orb-cli-dev"].settings, "train": {"total_epochs": 12.0}}, baseline=NONE,
    columns=PARTS["orb-cli"].columns)

# ... and the same final rows at 12 passes on its test split, scored once
PARTS["orb-cli-12-epochs"] = Part("orb-cli-12-epochs", "examples/orb-cli/task.yaml", (
    Table("orb-cli: the paper's budget, 12 passes (192 steps), 64 training rows", PARTS["orb-cli-dev-12-epochs"].tables[0].groups,
          note="Every row: 192 optimizer steps (12 passes over the 64 rows), the final configurations of the dev "
               "split's table above, scored once on the test split. " + PARTS["orb-cli"].tables[0].note),),
    settings={"eval": {"baseline_full_prompt": False}, "train": {"total_epochs": 12.0}}, baseline=NONE,
    columns=PARTS["orb-cli"].columns)

# Where the template must teach what no labeled row shows (examples/orb-cli/unseen.yaml): four of
# orb's eleven subcommands are in no training row, only in the template and in a request log of
# queries without answers, which the unlabeled-query teacher answers. Direct fine-tuning cannot
# write a name it never saw; the question is whether an internalizer can. Its dev split (200 rows).
_UNSEEN_TITLE = "orb-cli-unseen {split} split: 4 of 11 subcommands only the template shows, 64 training rows"
_UNSEEN_NOTE = (
    "Every row: 64 training rows none of which uses mirror, audit, ledger or rename, the same optimizer "
    "steps (3 passes), except the last group: the full-prompt fine-tune answers 512 queries of the "
    "task's request log (all eleven subcommands; no answers), the student trains 3 passes over the rows "
    "plus the answers it keeps, and direct fine-tuning beside it takes as many steps (27 passes over "
    "the 64 rows). EM unseen / seen: exact match on the {split} rows whose subcommand no training row "
    "shows, and on the others (examples/orb-cli/orb_metric.py). {scored}")
_UNSEEN_GROUPS = (("Direct fine-tuning", (NONE, FULL)), ("PromptIntern (paper)", ("promptintern",)),
                  ("Context distillation", ("context-distillation",)), UNLABELED_GROUP)
_UNSEEN_COLUMNS = (("EM unseen %", "exact_match_unseen", "{:.2f}"), ("EM seen %", "exact_match_seen", "{:.2f}"),
                   *PARTS["orb-cli"].columns)
PARTS["orb-cli-unseen-dev"] = Part("orb-cli-unseen-dev", "examples/orb-cli/unseen.yaml", (
    Table(_UNSEEN_TITLE.format(split="dev"), _UNSEEN_GROUPS,
          note=_UNSEEN_NOTE.format(split="dev", scored="All 200 dev rows scored.")),),
    settings={"eval": {"test_split": "dev", "test_subset": None, "baseline_full_prompt": False}}, baseline=NONE,
    columns=_UNSEEN_COLUMNS)

# ... and its test split (300 rows), scored once for the dev part's rows
PARTS["orb-cli-unseen"] = Part("orb-cli-unseen", "examples/orb-cli/unseen.yaml", (
    Table(_UNSEEN_TITLE.format(split="test"), _UNSEEN_GROUPS, note=_UNSEEN_NOTE.format(
        split="test", scored="All 300 test rows scored, once (the dev table above chose nothing to tune: "
                             "these are its rows).")),),
    settings={"eval": {"baseline_full_prompt": False}}, baseline=NONE, columns=_UNSEEN_COLUMNS)

METRIC_COLUMNS = {
    "bleu": (("BLEU", "bleu", "{:.2f}"), ("EM %", "exact_match", "{:.2f}"), ("NLC2CMD", "nlc2cmd", "{:.3f}"),
             ("BP", "brevity_penalty", "{:.3f}"), ("looping %", "looping_rate", "{:.1f}"),
             ("output tokens", "output_tokens_per_query", "{:.1f}")),
    "pass@1": (("Pass@1 %", "pass@1", "{:.2f}"), ("EM %", "exact_match", "{:.2f}")),
    "exact_match": (("EM %", "exact_match", "{:.2f}"),),
}


def _fmt(value, spec: str) -> str:
    return "" if value is None else spec.format(value)


def gap_recovered(value: float, none: float, full: float) -> float | None:
    """Share (%) of the no-template -> full-prompt gap that ``value`` recovers; None without a gap
    (the full prompt not above the query alone: there is nothing to recover)."""
    if full <= none:
        return None
    share = 100.0 * (value - none) / (full - none)
    return 0.0 if abs(share) < 0.5 else share  # no "-0"


def seed_scores(run: dict, main_seed: int = 0) -> list[tuple[int, float]]:
    """(train seed, metric) of a row's main run, then of each extra seed it ran with, in seed order."""
    metric = run["tuned"]["metric"]
    extra = sorted((int(s), r["tuned"][metric]) for s, r in run.get("seed_runs", {}).items() if r.get("tuned"))
    return [(main_seed, run["tuned"][metric])] + extra


def seed_columns(run: dict, main_seed: int, seed_sig: dict | None, variant: str) -> list[str]:
    """Per-seed scores ("16.62 / 17.10 / 16.31", the main run first), their mean ± sd, and the
    p-value against the baseline at each extra seed."""
    import statistics

    seeds, scores = zip(*seed_scores(run, main_seed))
    spread = f"{statistics.mean(scores):.2f} ± {statistics.stdev(scores):.2f}" if len(scores) > 1 else ""
    ps = [((seed_sig or {}).get(str(s), {}).get("systems", {}).get(variant) or {}).get("p_value") for s in seeds[1:]]
    return [" / ".join(f"{v:.2f}" for v in scores), spread,
            " / ".join("" if p is None else f"{p:.3f}" for p in ps)]


def table_markdown(table: Table, runs: dict[str, dict], significance: dict | None = None,
                   seed_significance: dict | None = None, main_seed: int = 0,
                   columns: Sequence[tuple[str, str, str]] = ()) -> str:
    """One table. ``runs[variant]``: ``{"status", "reason"?, "tuned": metrics.json of the fine-tuned
    model, "steps": optimizer steps summed over stages, "prompt_form"}``. ``significance``: what
    ``promptintern.significance.paired_bootstrap`` returned for these runs (adds the 95% interval and
    the p-value against its baseline, and hides a gap recovered that is within the noise)."""
    metric = next((r["tuned"]["metric"] for r in runs.values() if r.get("tuned")), "bleu")
    shown = table.variants
    # a column no row of the table measured (records made before it existed) is left out
    cols = [c for c in (*METRIC_COLUMNS.get(metric, METRIC_COLUMNS["exact_match"]), *columns)
            if c[1] == metric or any(runs.get(v, {}).get("tuned", {}).get(c[1]) is not None for v in shown)]
    full, none = (runs.get(v, {}).get("tuned") for v in (FULL, NONE))
    tested = (significance or {}).get("systems", {})
    extra = ["± 95% CI", f"p vs {significance['baseline']}"] if significance else []
    seeded = any(runs.get(v, {}).get("seed_runs") for v in shown)
    if seeded:
        baseline = (significance or {}).get("baseline", "the baseline")
        extra += [f"{cols[0][0]} per train seed ({main_seed} first)", "mean ± sd", f"p vs {baseline}, other seeds"]
    # the template + k-shot model served with its template in a prompt cache (records made since
    # the benchmark box measures it): a row of its own, and a speed-up column against it
    cached = (full or {}).get("template_cached")
    header = (["group", "method", "prompt at inference"] + [c[0] for c in cols] + extra
              + ["input tokens / query", "fewer tokens than template + k-shot", "s / instance",
                 "speed-up vs template + k-shot"] + (["speed-up vs template cached"] if cached else [])
              + ["gap recovered %", "train steps", "train tokens"])
    gap_is_noise = bool(full and none and FULL in tested and NONE in tested and abs(full[metric] - none[metric])
                        <= max(tested[FULL]["ci"], tested[NONE]["ci"]))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group_name, variants in table.groups:
        for i, variant in enumerate(variants):
            group = group_name if i == 0 else ""
            run = runs.get(variant)
            if run is None or not run.get("tuned"):
                status = "not run" if run is None else f"{run['status']}: {run.get('reason', '')}".strip(": ")
                lines.append("| " + " | ".join([group, variant, f"*{_short(status)}*"] + [""] * (len(header) - 3)) + " |")
                continue
            m = run["tuned"]
            tokens = m["input_tokens_per_query"]
            gap = (gap_recovered(m[metric], none[metric], full[metric]) if full and none else None)
            cells = [group, variant, run.get("prompt_form", "")]
            cells += [_fmt(m.get(key), spec) for _, key, spec in cols]
            if significance:
                sig = tested.get(variant, {})
                cells += [_fmt(sig.get("ci"), "{:.2f}"), _fmt(sig.get("p_value"), "{:.3f}")]
            if seeded:
                cells += seed_columns(run, main_seed, seed_significance, variant)
            forms = [(variant, recomputed_seconds(m))]
            if m.get("template_cached"):
                forms.append((variant + CACHED, m["template_cached"]["seconds_per_instance"]))
            for j, (method, seconds) in enumerate(forms):
                row = cells if j == 0 else ["", method, run.get("prompt_form", "")] + cells[3:]
                row = [*row[:1], method, *row[2:]]
                row += [f"{tokens:.1f}",
                        f"{full['input_tokens_per_query'] / tokens:.1f}x" if full and tokens else "",
                        f"{seconds:.3f}",
                        f"{recomputed_seconds(full) / seconds:.2f}x" if full and seconds else ""]
                row += [f"{cached['seconds_per_instance'] / seconds:.2f}x" if seconds else ""] if cached else []
                shown = "within noise" if gap_is_noise else "no gap" if full and none and gap is None else _fmt(gap, "{:.0f}")
                row += [shown, str(run.get("steps", "")),
                        train_tokens(variant, run)]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def train_tokens(variant: str, run: dict) -> str:
    """The tokens a row's training ran over, all stages (records made before the exact count was kept:
    tokens/s x seconds of each stage, the same number up to rounding); "+ teacher" where the variant
    also needs a full-prompt fine-tune to distil from, whose tokens are not in the count. The tables
    hold optimizer steps equal; this column says what that costs."""
    from promptintern.variants import VARIANTS

    stages = run.get("stages") or []
    if not stages:
        return ""
    total = sum(s["tokens"] if s.get("tokens") is not None else s["tokens_per_second"] * s["seconds"]
                for s in stages)
    teacher = (VARIANTS.get(variant, {}).get("train", {}).get("distill") or {}).get("teacher") == "full-prompt-ft"
    return f"{total / 1000:.1f}k" + (" + teacher" if teacher else "")


def _short(text: str, limit: int = 110) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reference_markdown(base: dict | None, columns: Sequence[tuple[str, str, str]] = ()) -> str:
    """The untuned model with the full prompt: what the paper calls the base model's ceiling."""
    if not base:
        return ""
    cols = (*METRIC_COLUMNS.get(base["metric"], METRIC_COLUMNS["exact_match"]), *columns)
    scores = ", ".join(f"{name} {_fmt(base.get(key), spec)}" for name, key, spec in cols if base.get(key) is not None)
    return (f"Base model without fine-tuning, {base.get('prompt_form', 'full prompt')}: {scores}; "
            f"{base['input_tokens_per_query']:.1f} input tokens / query, "
            f"{recomputed_seconds(base):.3f} s / instance"
            + (f" ({base['template_cached']['seconds_per_instance']:.3f} with the template cached)."
               if base.get("template_cached") else "."))


def render_part(part: Part, record: dict) -> str:
    """The Markdown of one part: its tables, the plot and how the numbers were made.

    ``record``: what ``flows.reproduce`` stored in ``docs/results/<part>.json``."""
    runs = record["runs"]
    out = []
    significance = record.get("significance")
    for table in part.tables:
        out += [f"#### {table.title}", "",
                table_markdown(table, runs, significance, record.get("seed_significance"), columns=part.columns), ""]
        if table.note:
            out += [table.note, ""]
        full = (runs.get(FULL) or {}).get("tuned")
        if FULL in table.variants and full and not full.get("template_cached"):
            out += [f"No \"{FULL}{CACHED}\" row: this record predates the benchmark box timing the full prompt with "
                    "its template in a prompt cache (commit 5ce12ff); the next run of the part adds it.", ""]
    for base in (record.get("base_full_prompt"), record.get("base_query_only")):
        ref = reference_markdown(base, part.columns)
        if ref:
            out += [ref, ""]
    if significance:
        out += [significance_note(significance), ""]
    if record.get("plot"):
        out += [f"![metric vs input tokens, {part.name}]({record['plot']})", ""]
    prov = record["provenance"]
    out += ["How these numbers were made:", ""]
    out += [f"- {key}: {value}" for key, value in prov.items()]
    return "\n".join(out) + "\n"


def significance_note(sig: dict) -> str:
    """What the ``± 95% CI`` and ``p vs ...`` columns mean, with how they were made."""
    return (f"± 95% CI: half-width of the 95% interval of {sig['metric']} over {sig['n_samples']} paired bootstrap "
            f"resamples of the {sig['rows']} test rows ({sig['method']}, seed {sig['seed']}); p vs {sig['baseline']}: "
            f"the chance of a difference at least this large from resampling alone (below 0.05: more than the "
            f"test set's noise). Gap recovered is left out (\"within noise\") when the no-template and "
            f"template + k-shot models differ by less than the larger of their intervals, and is \"no gap\" when the "
            f"template + k-shot model is below the no-template one. Rescore from "
            f"`docs/results/predictions/`.")


def replace_region(document: str, name: str, body: str) -> str:
    """``document`` with the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``
    replaced by ``body``; the region is appended when the markers are missing."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(document):
        return pattern.sub(lambda _: block, document, count=1)
    return document.rstrip() + "\n\n" + block + "\n"


def plot_points(part: Part, record: dict) -> list[dict]:
    """Rows for ``report.plot_metric_vs_tokens``: one point per variant that produced a model, with
    its 95% bootstrap interval where the record has one, and the untuned base model's point."""
    points = []
    systems = (record.get("significance") or {}).get("systems", {})
    for variant in part.variants:
        m = record["runs"].get(variant, {}).get("tuned")
        if m:
            points.append({"variant": variant, "value": m[m["metric"]], "metric": m["metric"],
                           "input tokens / query": m["input_tokens_per_query"],
                           "group": _group_of(part, variant), "ci": systems.get(variant, {}).get("ci")})
    base = record.get("base_full_prompt")
    if base:
        points.append({"variant": "base model", "value": base[base["metric"]], "metric": base["metric"],
                       "input tokens / query": base["input_tokens_per_query"], "group": "untuned base model"})
    return points


def _group_of(part: Part, variant: str) -> str:
    for table in part.tables:
        for group, variants in table.groups:
            if variant in variants:
                return group.split(" (")[0]
    return "reference"


PREDICTION_FIELDS = ("id", "prediction", "reference", "exec_status", "exec_detail")


def export_predictions(eval_dir: Path, dest: Path) -> Path:
    """A benchmark's scored rows, as published next to the tables: enough to rescore any number
    (``promptintern.significance``) without the model or the artifact root. Rows judged by running
    them keep their verdict and its one-line reason (``test 0: TypeError``, enough to count the
    failures by kind) and leave out the reference (a whole program, not needed to rescore)."""
    rows = read_predictions(eval_dir / "predictions.jsonl")
    fields = [k for k in PREDICTION_FIELDS if not (k == "reference" and rows and "exec_status" in rows[0])]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".partial")
    tmp.write_text("".join(json.dumps({k: r[k] for k in fields if k in r}, ensure_ascii=False) + "\n"
                           for r in rows), encoding="utf-8")
    tmp.replace(dest)
    return dest


def read_predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_document(path: Path, parts: Sequence[tuple[Part, dict]], header: str) -> str:
    """Rewrite each part's region of ``path`` (created with ``header`` when missing)."""
    text = path.read_text() if path.exists() else header
    for part, record in parts:
        text = replace_region(text, part.name, render_part(part, record))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


# ---------------------------------------------------------------------------------------------
# Seconds per instance, re-measured together
# ---------------------------------------------------------------------------------------------


def models_of(part: str, runs: dict[str, dict], root: Path) -> tuple[dict, dict, list[str]]:
    """The benchmark folders of a part's models (``<part>/<variant>`` and ``<part>/base model``),
    their prompt forms, and the completed rows whose run is not under ``root``."""
    evals, forms, missing = {}, {}, []
    order = PARTS[part].variants
    for variant in sorted(runs, key=lambda v: order.index(v) if v in order else len(order)):
        run = runs[variant]
        if run.get("status") != "completed":
            continue
        eval_dirs = eval_dirs_of(run, root)
        if eval_dirs is None:
            missing.append(f"{part}/{variant}")
            continue
        evals[f"{part}/{variant}"] = eval_dirs["promptintern"]
        forms[f"{part}/{variant}"] = run["prompt_form"]
        if "base-full-prompt" in eval_dirs:
            evals[f"{part}/base model"] = eval_dirs["base-full-prompt"]
            forms[f"{part}/base model"] = (run.get("base_full_prompt") or {}).get("prompt_form", "full prompt")
    return evals, forms, missing


def eval_dirs_of(run: dict, root: Path) -> dict[str, str] | None:
    """A completed row's benchmark folders under ``root`` by label (``promptintern``, and
    ``base-full-prompt`` where the run benchmarked the untuned model), from its run's report;
    None when the run is not under ``root`` (the row was made in another artifact root)."""
    report = root / run["run_dir"] / "results.json"
    return json.loads(report.read_text())["eval_dirs"] if report.exists() else None


def timing_jobs(root: Path, evals: dict[str, str], rows: int) -> dict[str, dict]:
    """What each benchmark (``evals``: name -> benchmark folder under ``root``) generated, as
    ``promptintern.generate.generate`` keywords for its first ``rows`` test prompts: its model,
    prompts, stop strings, batch size and max_new_tokens (``prefix_cache`` off), plus ``template``
    (whether its prompts carry one) and ``test_rows`` (how many rows the benchmark scored)."""
    from promptintern.pipeline import benchmark_prompts

    jobs = {}
    for name, rel in evals.items():
        inputs = json.loads((root / rel / "manifest.json").read_text())["inputs"]
        at = {key: (root / inputs[key]) if inputs.get(key) else None
              for key in ("model_dir", "dataset_dir", "template_dir", "bank_dir")}
        task, _, _, prompts, _ = benchmark_prompts(at["model_dir"], at["dataset_dir"], at["template_dir"],
                                                at["bank_dir"], inputs["k"], name, inputs.get("chat", "off"))
        jobs[name] = dict(model_dir=at["model_dir"], prompts=prompts[:rows], stop=task.stop,
                          batch_size=inputs["eval"]["batch_size"], max_new_tokens=inputs["eval"]["max_new_tokens"],
                          prefix_cache=False, template=at["template_dir"] is not None, test_rows=len(prompts))
    return jobs


def retime(root: Path, evals: dict[str, str], rows: int = 24, repeats: int = 3) -> dict[str, dict]:
    """Seconds per instance of each benchmark's prompt form, measured again side by side.

    A run measures its own benchmark alone, at whatever load the machine had then; here every form
    (``evals``: name -> benchmark folder under ``root``) generates for the same first ``rows`` test
    rows with its own model, batch size and max_new_tokens, ``repeats`` times in rotating order,
    and the median counts. Returns per name: median and all seconds per instance, mean input and
    output tokens, rows.
    """
    import statistics

    from promptintern.generate import generate

    jobs = timing_jobs(root, evals, rows)
    for name in list(jobs):
        if jobs[name]["template"]:  # the same prompts, the template prefilled once and reused
            jobs[name + CACHED] = {**jobs[name], "prefix_cache": True}
    for job in jobs.values():  # what describes the benchmark, not how to generate
        del job["template"], job["test_rows"]
    names = list(jobs)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    tokens: dict[str, tuple[float, float]] = {}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            gens = generate(progress=False, **jobs[name])
            seconds[name].append(gens.seconds_per_instance)
            tokens[name] = (statistics.fmean(gens.input_tokens), statistics.fmean(gens.output_tokens))
    return {name: {"seconds_per_instance": statistics.median(seconds[name]), "all": seconds[name],
                   "input_tokens": tokens[name][0], "output_tokens": tokens[name][1],
                   "rows": len(jobs[name]["prompts"])} for name in names}


def timing_markdown(timing: dict[str, dict], forms: dict[str, str], reference: str = FULL) -> str:
    """The re-measured seconds per instance as a table; ``forms``: name -> prompt at inference.
    Names are ``<part>/<variant>``; the speed-up is against ``<part>/<reference>``."""
    cached = any(name.endswith(CACHED) for name in timing)
    header = ["method", "prompt at inference", "input tokens / query", "output tokens / query",
              "s / instance (median)", "all repeats", f"speed-up vs {reference}"]
    header += [f"speed-up vs {reference}{CACHED}"] if cached else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, t in timing.items():
        part, variant = name.split("/", 1)
        seconds = t["seconds_per_instance"]
        cells = [variant, forms.get(name.removesuffix(CACHED), ""), f"{t['input_tokens']:.1f}",
                 f"{t['output_tokens']:.1f}", f"{seconds:.3f}", ", ".join(f"{s:.3f}" for s in t["all"])]
        for ref in [timing.get(f"{part}/{reference}")] + ([timing.get(f"{part}/{reference}{CACHED}")] if cached else []):
            cells.append(f"{ref['seconds_per_instance'] / seconds:.2f}x" if ref else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
