"""Retrieval bank: exact sentence-BLEU scores and top-k against sacrebleu itself."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import SHARED_DATA
from sacrebleu import sentence_bleu
from sacrebleu.metrics import BLEU

from promptintern.retrieve import (RetrievalBank, bank_pool, bleu_score_matrix, bleu_topk, bm25_topk,
                                   build_bank, retrieve_for)

TRAIN = SHARED_DATA / "nl2bash" / "split" / "train.jsonl"
needs_nl2bash = pytest.mark.skipif(not TRAIN.is_file(), reason=f"NL2Bash train split not found at {TRAIN}")


@pytest.fixture(scope="module")
def nl2bash_queries() -> list[str]:
    return [json.loads(line)["nl"] for line in TRAIN.open()]


def sacrebleu_matrix(queries, candidates, tokenize="13a") -> np.ndarray:
    """sentence_bleu(c, [q]).score for all pairs; one BLEU object (what sentence_bleu builds per call)."""
    metric = BLEU(tokenize=tokenize, effective_order=True)
    return np.array([[metric.sentence_score(c, [q]).score for c in candidates] for q in queries])


def brute_topk(B: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Reference top-k: sacrebleu scores rounded to 1e-9 (its per-order logs make true ties differ in
    the last bits), best first, ties to the lower index."""
    B = np.round(B, 9)
    if exclude_self:
        np.fill_diagonal(B, -np.inf)
    return np.array([sorted(range(B.shape[1]), key=lambda j: (-row[j], j))[:k] for row in B], dtype=np.int64)


EDGE_CASES = ["", "   ", "a", "a a", "a b", "a b c", "a b c d", "a a a a a a", "a b a b a b a",
              "the cat sat on the mat .", "the the the cat", "cat the mat on sat the", "x y z w v u t",
              "Find all *.txt files (recursively) and delete them!", "find all txt files and delete them"]


@pytest.mark.parametrize("tokenize", ["13a", "none", "char"])
def test_matrix_equals_sacrebleu_on_edge_cases(tokenize):
    # empty and 1-3 token sentences (effective order < 4), repeated tokens (clipping), brevity
    S = bleu_score_matrix(EDGE_CASES, EDGE_CASES, tokenize=tokenize)
    B = [[sentence_bleu(c, [q], tokenize=tokenize).score for c in EDGE_CASES] for q in EDGE_CASES]
    np.testing.assert_allclose(S, B, rtol=0, atol=1e-9)


@needs_nl2bash
def test_matrix_equals_sacrebleu_on_nl2bash_sample(nl2bash_queries):
    rng = random.Random(0)
    queries, candidates = rng.sample(nl2bash_queries, 40), rng.sample(nl2bash_queries, 60)
    S = bleu_score_matrix(queries, candidates)
    assert S.shape == (40, 60)
    np.testing.assert_allclose(S, sacrebleu_matrix(queries, candidates), rtol=0, atol=1e-9)


@needs_nl2bash
def test_topk_equals_bruteforce_sacrebleu(nl2bash_queries):
    rows = random.Random(1).sample(nl2bash_queries, 150)
    B = sacrebleu_matrix(rows, rows)
    for k in (1, 10, 149):
        assert np.array_equal(bleu_topk(rows, rows, k, exclude_self=True), brute_topk(B, k, exclude_self=True))
    assert np.array_equal(bleu_topk(rows[:20], rows, 10), brute_topk(B[:20], 10))
    assert np.array_equal(retrieve_for(rows[:20], rows, 10), brute_topk(B[:20], 10))


def test_self_exclusion_keeps_duplicates():
    rows = ["list all files", "list all files", "show disk usage", "list all files here"]
    top = bleu_topk(rows, rows, 3, exclude_self=True)
    assert all(i not in top[i] for i in range(len(rows)))
    assert top[0, 0] == 1 and top[1, 0] == 0  # the identical other row is the best example
    bank = build_bank(rows, 3)
    assert np.array_equal(bank.neighbors, top)


def test_ties_go_to_lower_index_and_blocks_do_not_matter():
    q = ["a b c d e f g h"]
    # Different statistics, same true score: c = (3, 1, 0, 0), h = 15 vs c = (4, 1, 0, 0), h = 16,
    # 3 / (15*14*13*12) == 4 / (16*15*14*13); sacrebleu's two floats differ in the last bits.
    h15 = "a b x1 c x2 x3 x4 x5 x6 x7 x8 x9 x10 x11 x12"
    h16 = "a b y1 c y2 d y3 y4 y5 y6 y7 y8 y9 y10 y11 y12"
    S = bleu_score_matrix(q, [h15, h16])
    assert S[0, 0] == S[0, 1]
    assert abs(S[0, 0] - sentence_bleu(h15, q).score) < 1e-9
    assert bleu_topk(q, [h15, h16], 2).tolist() == [[0, 1]]
    assert bleu_topk(q, [h16, h15], 2).tolist() == [[0, 1]]
    cands = ["zzz", "a b c", "a b c", "a b c d e f g h", "a b c", "a b c d e f g h"]
    assert bleu_topk(q, cands, 5).tolist() == [[3, 5, 1, 2, 4]]
    queries = [c + " e" for c in cands] + q
    expected = bleu_topk(queries, cands, 4)
    for block_size in (1, 3, 1000):
        assert np.array_equal(bleu_topk(queries, cands, 4, block_size=block_size), expected)


@needs_nl2bash
def test_bank_fraction_restricts_the_pool(nl2bash_queries):
    rows = nl2bash_queries[:300]
    bank = build_bank(rows, 5, bank_fraction=0.25, seed=3)
    pool = bank_pool(300, 0.25, seed=3)
    assert bank.pool_size == len(pool) == 75 and bank.neighbors.shape == (300, 5)
    assert np.isin(bank.neighbors, pool).all()
    assert all(i not in bank.neighbors[i] for i in range(300))
    outside = np.setdiff1d(np.arange(300), pool)[:10]  # rows outside the pool rank the whole pool
    expected = pool[bleu_topk([rows[i] for i in outside], [rows[j] for j in pool], 5)]
    assert np.array_equal(bank.neighbors[outside], expected)
    assert np.array_equal(build_bank(rows, 5, bank_fraction=0.25, seed=3).neighbors, bank.neighbors)
    assert not np.array_equal(bank_pool(300, 0.25, seed=4), pool)
    assert np.array_equal(bank_pool(300, 1.0), np.arange(300))


def test_bm25_valid_and_matches_rank_bm25():
    from rank_bm25 import BM25Okapi

    from promptintern.retrieve import _tokenize

    rows = EDGE_CASES[2:] + ["list the files in the directory", "delete the files", "show the files"]
    top = bm25_topk(rows, rows, 4, exclude_self=True)
    assert top.shape == (len(rows), 4) and top.dtype == np.int64
    assert ((top >= 0) & (top < len(rows))).all()
    assert all(i not in top[i] and len(set(top[i])) == 4 for i in range(len(rows)))
    bm = BM25Okapi(_tokenize(rows, "13a"))
    B = np.array([bm.get_scores(q) for q in _tokenize(rows, "13a")])
    assert np.array_equal(bm25_topk(rows, rows, 5), brute_topk(B, 5))
    bank = build_bank(rows, 2, scorer="bm25")
    assert bank.scorer == "bm25" and np.array_equal(bank.neighbors, top[:, :2])


def test_k_zero_and_bank_roundtrip(tmp_path):
    rows = ["list files", "list all files", "remove files", "show date"]
    assert bleu_topk(rows, rows, 0).shape == (4, 0)
    assert build_bank(rows, 0).neighbors.shape == (4, 0)
    bank = build_bank(rows, 2, bank_fraction=0.75, seed=1)
    bank.save(tmp_path / "a.json")
    bank.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    back = RetrievalBank.load(tmp_path / "a.json")
    assert np.array_equal(back.neighbors, bank.neighbors) and back.neighbors.dtype == np.int64
    assert (back.scorer, back.bank_fraction, back.pool_size, back.seed) == ("bleu", 0.75, 3, 1)


@pytest.mark.parametrize("call, name", [
    (lambda r: bleu_topk(r, r, -1), "k"),
    (lambda r: bleu_topk(r, r, 4), "k"),
    (lambda r: bleu_topk(r, r, 3, exclude_self=True), "k"),
    (lambda r: bleu_topk(r, r, True), "k"),
    (lambda r: bleu_topk(r, r[:2], 1, exclude_self=True), "exclude_self"),
    (lambda r: bleu_topk(r, r, 1, tokenize="spaces"), "tokenize"),
    (lambda r: bleu_topk(r, r, 1, block_size=0), "block_size"),
    (lambda r: build_bank(r, 1, scorer="tfidf"), "scorer"),
    (lambda r: build_bank(r, 1, bank_fraction=0.0), "bank_fraction"),
    (lambda r: build_bank(r, 1, bank_fraction=1.5), "bank_fraction"),
    (lambda r: build_bank(r, 1, bank_fraction=float("nan")), "bank_fraction"),
    (lambda r: build_bank(r, 1, seed=None), "seed"),
    (lambda r: build_bank(r, 3), "k"),
    (lambda r: retrieve_for(r, r, 1, scorer="BLEU"), "scorer"),
])
def test_bad_arguments_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call(["a b", "a c", "b c"])


def test_the_scored_sides_bank_retrieves_the_test_rows_alone_as_the_full_bank_does(tiny_data_dir, tmp_path):
    """The benchmarks' bank beside a training side with its own (``scored_only``): the same test
    neighbors as a bank over the whole folder, and no training-row neighbors computed again."""
    from promptintern import pipeline
    from promptintern.config import preset

    retrieval = preset("tiny").retrieval
    data = tmp_path / "dataset"
    data.mkdir()
    pipeline.prepare_dataset("nl2bash", str(tiny_data_dir), 12, "test", 5, 0, data)
    full, scored = tmp_path / "full", tmp_path / "scored"
    full.mkdir(), scored.mkdir()
    pipeline.bank(data, 3, retrieval, 0, full)
    stats = pipeline.bank(data, 3, retrieval, 0, scored, scored_only=True)
    assert np.array_equal(np.load(scored / "test_neighbors.npy"), np.load(full / "test_neighbors.npy"))
    assert not (scored / "train_neighbors.npy").exists() and (full / "train_neighbors.npy").exists()
    assert stats["test_rows"] == 5 and stats["pool_size"] == 12
    training_side = tmp_path / "training-side"
    training_side.mkdir()
    pipeline.prepare_dataset("nl2bash", str(tiny_data_dir), 12, None, None, 0, training_side)
    with pytest.raises(ValueError, match="no test rows"):
        pipeline.bank(training_side, 3, retrieval, 0, tmp_path, scored_only=True)
