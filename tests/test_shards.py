import numpy as np
import pyarrow.parquet as pq
import pytest

from promptintern.datasets import get_task
from promptintern.models import load_tokenizer
from promptintern.schedule import StageSpec
from promptintern.shards import SCHEMA, read_shard, shard_stats, write_shard


def test_shard_schema_prompts_and_token_counts(tiny_model_dir, tiny_data_dir, tmp_path):
    task = get_task("nl2bash")
    rows = task.load(tiny_data_dir, "train")[:6]
    tok = load_tokenizer(tiny_model_dir)
    neighbors = np.array([[(i + 1) % 6, (i + 2) % 6] for i in range(6)])
    path = tmp_path / "shard.parquet"
    stats = write_shard(path, rows, rows, neighbors, StageSpec(stage=2, tau=0.5, k=2), "TEMPLATE TEXT",
                        task.format, tok)
    table = read_shard(path)
    assert table.schema.remove_metadata().equals(SCHEMA)
    assert table.num_rows == 6
    first = table.slice(0, 1).to_pylist()[0]
    assert first["stage"] == 2 and first["k"] == 2 and first["tau"] == pytest.approx(0.5)
    assert first["prompt"].startswith("TEMPLATE TEXT")
    # shots: most similar last, right before the query
    assert first["example_ids"] == [rows[2].id, rows[1].id]
    assert first["prompt"].index(rows[2].query) < first["prompt"].index(rows[1].query) < first["prompt"].rindex(rows[0].query)
    assert first["target"] == " " + rows[0].target
    assert first["prompt_tokens"] == len(tok(first["prompt"], add_special_tokens=False)["input_ids"])
    assert shard_stats(path)["rows"] == 6 == stats["rows"]


def test_query_only_stage_has_no_template_and_no_shots(tiny_model_dir, tiny_data_dir, tmp_path):
    task = get_task("nl2bash")
    rows = task.load(tiny_data_dir, "train")[:3]
    path = tmp_path / "shard.parquet"
    write_shard(path, rows, rows, None, StageSpec(stage=3, tau=0.0, k=0), "", task.format,
                load_tokenizer(tiny_model_dir))
    prompts = pq.read_table(path).column("prompt").to_pylist()
    assert prompts == [f"Task: {r.query}\nCommand:" for r in rows]


def test_too_few_neighbors_is_an_error(tiny_model_dir, tiny_data_dir, tmp_path):
    task = get_task("nl2bash")
    rows = task.load(tiny_data_dir, "train")[:3]
    with pytest.raises(ValueError, match="k=2"):
        write_shard(tmp_path / "s.parquet", rows, rows, np.zeros((3, 1), dtype=int),
                    StageSpec(stage=1, tau=1.0, k=2), "", task.format, load_tokenizer(tiny_model_dir))


def test_replayed_rows_train_in_the_final_form(tiny_model_dir, tiny_data_dir, tmp_path):
    """schedule.replay: a share of an earlier stage's rows is rendered exactly as the last stage
    renders them (its tau and k in the row), drawn afresh for every stage; the rest as the stage."""
    from promptintern.shards import Replay, replay_rows

    task = get_task("nl2bash")
    rows = task.load(tiny_data_dir, "train")[:8]
    tok = load_tokenizer(tiny_model_dir)
    neighbors = np.array([[(i + 1) % 8, (i + 2) % 8] for i in range(8)])
    chosen = replay_rows(8, 0.25, stage=1, seed=0)
    assert len(chosen) == 2 and chosen == replay_rows(8, 0.25, stage=1, seed=0)
    assert {replay_rows(8, 0.5, stage=s, seed=0) for s in (1, 2, 3)} != {replay_rows(8, 0.5, stage=1, seed=0)}
    final = StageSpec(stage=3, tau=0.0, k=0)
    path = tmp_path / "mixed.parquet"
    stats = write_shard(path, rows, rows, neighbors, StageSpec(stage=1, tau=1.0, k=2), "TEMPLATE TEXT", task.format,
                        tok, replay=Replay(chosen, final, ""))
    write_shard(tmp_path / "final.parquet", rows, rows, None, final, "", task.format, tok)
    mixed, last = read_shard(path).to_pylist(), read_shard(tmp_path / "final.parquet").to_pylist()
    assert stats["replayed_rows"] == 2
    for i, (row, final_row) in enumerate(zip(mixed, last)):
        if i in chosen:
            assert (row["tau"], row["k"], row["example_ids"]) == (0.0, 0, [])
            assert row["prompt"] == final_row["prompt"]  # token for token the inference form
        else:
            assert (row["tau"], row["k"]) == (1.0, 2) and row["prompt"].startswith("TEMPLATE TEXT")
        assert row["stage"] == 1 and row["target"] == final_row["target"]
