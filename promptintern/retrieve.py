"""Retrieval bank: the k most similar training rows of every query, by sentence BLEU.

PromptIntern (Zou et al., 2024) gives every training example its k most relevant few-shot
examples, retrieved from the training set by BLEU similarity of the *query*, self excluded.
sacrebleu costs ~86 us a pair, so the 8,090 x 8,090 NL2Bash bank would take 1.5 h pair by
pair; this module computes exactly the same scores in seconds.

Which side is which: ``S[i, j] = sacrebleu.sentence_bleu(candidates[j], [queries[i]]).score``.
The query is the *reference*, each candidate a *hypothesis*. Sentence BLEU is asymmetric
(precisions count the hypothesis' n-grams; the brevity penalty punishes hypotheses shorter
than the reference). Fixing the query as the single reference of row i measures every
candidate of that row against the same yardstick, which is how sentence BLEU is meant to
rank competing hypotheses, and asks the retrieval question: how much of this candidate's
wording does the query share.

Exactness: sacrebleu's sentence_bleu defaults (tokenizer "13a", ``smooth_method="exp"``,
``use_effective_order=True``, max order 4, no lowercasing, ``rstrip`` before tokenizing).
For hypothesis length h, reference length r, ``t_n = h - n + 1`` hypothesis n-grams and
clipped matches ``c_n = sum_g min(count_hyp(g), count_ref(g))``, sacrebleu computes

    BLEU = 100 * min(1, exp(1 - r / h)) * (prod_{n <= e} m_n / t_n) ^ (1 / e),

with effective order ``e = min(4, h)`` (it stops at the first order without hypothesis
n-grams; orders without *matches* still count), ``m_n = c_n``, or 1/2, 1/4, 1/8 for the
first, second, third order with ``c_n = 0`` ('exp' smoothing), and BLEU = 0 when nothing
matches. Here:

* counts: the t-th occurrence of n-gram g in a sentence is its own binary feature (g, t), so
  ``min(a, b) = #{t : t <= a and t <= b}`` and c_n for a block of queries against all
  candidates is one matrix product per order (scipy.sparse, frequent features as dense rows);
* the rest is a few vectorized passes: smoothing folded into the counts, the product of
  precisions formed as one exact rational (integers and powers of two, < 2^53) and rounded
  once, its e-th root by sqrt/cbrt, and the brevity penalty on runs of equal candidate length
  (candidates are processed sorted by length).

Scores agree with sacrebleu to ~1e-13. Rounding the precision product once makes equal true
scores bitwise equal (e.g. 3/(15*14*13*12) and 4/(16*15*14*13), which sacrebleu's per-order
logs tell apart by rounding noise), so ties are real ties and go to the lower candidate
index. Queries are processed in blocks: memory is O(block_size * len(candidates)).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import scipy.sparse as sp

MAX_ORDER = 4
SCORERS = ("bleu", "bm25")
DEFAULT_BLOCK_SIZE = 128  # queries a block; 64-512 ran within 5%, 128 holds peak RSS ~170 MB on NL2Bash
# A feature is counted densely when at least this share of the candidates has it (see
# _BlockProduct); on NL2Bash 122, 87, 36, 14 features of orders 1-4 qualify,
# which cut the count time by a third against 0.1 or 0.002.
_DENSE_MIN_SHARE = 0.02
_MAX_DENSE_FEATURES = 1024


# --------------------------------------------------------------------------- validation
def _check_k(k: int, available: int, what: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    if k > available:
        raise ValueError(f"k={k} exceeds the {available} candidates available ({what})")
    return int(k)


def _check_scorer(scorer: str) -> str:
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    return scorer


def _check_block_size(block_size: int) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    return int(block_size)


def _tokenizer(tokenize: str):
    """sacrebleu's own tokenizer object, so tokens match sentence_bleu exactly."""
    from sacrebleu.metrics import BLEU

    if tokenize not in BLEU.TOKENIZERS:
        raise ValueError(f"tokenize must be one of {sorted(BLEU.TOKENIZERS)}, got {tokenize!r}")
    return BLEU(tokenize=tokenize).tokenizer


def _tokenize(texts: Sequence[str], tokenize: str, cache: dict | None = None) -> list[list[str]]:
    """Whitespace tokens after sacrebleu preprocessing (rstrip, then the tokenizer).

    The tokenizer is the slow part (~80 us a sentence); ``cache`` shares it across the query
    and candidate lists (NL2Bash repeats ~8% of its queries; a bank's pool is a subset).
    """
    tok, cache = _tokenizer(tokenize), {} if cache is None else cache
    out = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"queries and candidates must be strings, got {type(text).__name__}")
        if text not in cache:
            cache[text] = tok(text.rstrip()).split()
        out.append(cache[text])
    return out


def _tokenize_both(queries, candidates, tokenize: str) -> tuple[list[list[str]], list[list[str]]]:
    cache: dict = {}
    cand_toks = _tokenize(candidates, tokenize, cache)
    return (cand_toks if queries is candidates else _tokenize(queries, tokenize, cache)), cand_toks


# --------------------------------------------------------------------------- BLEU counts
def _featurize(token_lists: list[list[str]], vocabs: list[dict], grow: bool) -> list[sp.csr_matrix]:
    """Per order n, a binary (sentences x features) matrix of (n-gram, occurrence) features.

    With ``grow`` unseen features enter ``vocabs`` (candidate side); without, they are dropped
    (query side: a feature no candidate has never matches).
    """
    mats = []
    for n, vocab in enumerate(vocabs, start=1):
        indptr, indices = [0], []
        for toks in token_lists:
            grams = toks if n == 1 else zip(*(toks[i:] for i in range(n)))
            seen: dict = {}
            for g in grams:
                t = seen.get(g, 0) + 1
                seen[g] = t
                key = g if t == 1 else (g, t)
                j = vocab.get(key)
                if j is None:
                    if not grow:
                        continue
                    j = vocab[key] = len(vocab)
                indices.append(j)
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float32)
        shape = (len(token_lists), len(vocab))
        mats.append(sp.csr_matrix((data, np.asarray(indices, np.int64), np.asarray(indptr, np.int64)), shape=shape))
    return mats


class _BlockProduct:
    """``Q[rows] @ C.T`` as a dense block, for sparse feature matrices (BLEU counts, BM25 weights).

    A feature shared by many candidates is cheaper as a dense row of C.T (each query feature
    adds a whole row, vectorized) than as sparse co-occurrences (~15 ns each to multiply and
    scatter); the long tail stays sparse. No BLAS: its threads only add contention here.
    """

    def __init__(self, Q: sp.csr_matrix, C: sp.csr_matrix):
        df = C.getnnz(axis=0)
        dense = np.argsort(-df, kind="stable")[:_MAX_DENSE_FEATURES]
        dense = np.sort(dense[df[dense] >= _DENSE_MIN_SHARE * C.shape[0]])
        tail = np.setdiff1d(np.arange(C.shape[1]), dense)
        self.Qd, self.CdT = Q[:, dense].tocsr(), np.ascontiguousarray(C[:, dense].T.toarray())
        self.Qs, self.CsT = Q[:, tail].tocsr(), C[:, tail].T.tocsr()

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of Q @ C.T (for binary features: exact integer counts in float32)."""
        out = np.asarray(self.Qd[start:stop] @ self.CdT, dtype=self.CdT.dtype)
        tail = self.Qs[start:stop] @ self.CsT  # canonical CSR: no duplicate (row, col)
        flat = np.repeat(np.arange(stop - start) * out.shape[1], np.diff(tail.indptr))
        flat += tail.indices
        out.reshape(-1)[flat] += tail.data
        return out


def _smoothed(counts: list[np.ndarray]) -> list[np.ndarray]:
    """Match counts with 'exp' smoothing folded in, in place: 0 -> 1/2, 1/4, 1/8 for the 1st, 2nd, 3rd zero order.

    Matched orders form a prefix (a matched (n+1)-gram contains a matched n-gram), so an
    order's zero becomes half of min(previous smoothed count, 1). Then prod_n m_n / t_n is
    sacrebleu's product of precisions (times 100^-e), with no per-pair branching. Unigrams
    stay raw: c_1 = 0 must give 0 (sacrebleu returns 0 when nothing matches).
    """
    floor = 0.5
    for n, c in enumerate(counts[1:], start=2):
        np.maximum(c, floor, out=c)
        if n < len(counts):
            floor = np.minimum(c, 1.0)
            floor *= 0.5
    return counts


_ROOTS = {1: lambda x, out: x, 2: np.sqrt, 3: np.cbrt, 4: lambda x, out: np.sqrt(np.sqrt(x, out=out), out=out)}


class _BleuScorer:
    """sentence_bleu of query blocks (references) against fixed candidates (hypotheses).

    Candidates are processed sorted by length, so effective order and brevity penalty are
    constant on column runs; each block is returned in the callers' candidate order.
    """

    def __init__(self, Q: list[sp.csr_matrix], C: list[sp.csr_matrix], ref_len: np.ndarray, hyp_len: np.ndarray):
        self.order = np.argsort(hyp_len, kind="stable")
        self.unsort = np.argsort(self.order)
        self.products = [_BlockProduct(q, c[self.order]) for q, c in zip(Q, C)]
        self.ref_len = ref_len.astype(np.float64)
        h = hyp_len[self.order]
        self.prod_t = np.prod([np.maximum(h - m, 1) for m in range(MAX_ORDER)], axis=0).astype(np.float64)
        # columns of effective order e = min(h, 4), then runs of equal length for the brevity penalty
        bounds = np.searchsorted(h, [1, 2, 3, MAX_ORDER, np.inf])
        self.by_order = [(e, bounds[e - 1], bounds[e]) for e in range(1, MAX_ORDER + 1)]
        lengths, starts = np.unique(h, return_index=True)
        self.runs = list(zip(lengths.tolist(), starts.tolist(), [*starts[1:].tolist(), len(h)]))

    def block(self, start: int, stop: int) -> np.ndarray:
        """BLEU / 100 of queries start:stop (rows) against all candidates (columns)."""
        c1, *higher = _smoothed([p.rows(start, stop) for p in self.products])
        x = np.multiply(c1, higher[0], dtype=np.float64)  # prod of smoothed counts: exact dyadic rational
        for c in higher[1:]:
            x *= c
        for e, lo, hi in self.by_order[:-1]:  # short hypotheses: orders beyond h do not count
            x[:, lo:hi] = np.prod([c1[:, lo:hi], *(c[:, lo:hi] for c in higher[: e - 1])], axis=0, dtype=np.float64)
        x /= self.prod_t  # one correctly rounded division: equal true scores give equal floats
        for e, lo, hi in self.by_order:
            _ROOTS[e](x[:, lo:hi], out=x[:, lo:hi])  # geometric mean of the e precisions
        r = self.ref_len[start:stop]
        r_max = r.max()
        for h, lo, hi in self.runs:
            if h >= r_max:
                break
            if h == 0:
                continue
            x[:, lo:hi] *= np.exp(np.minimum(0.0, 1.0 - r / h))[:, None]  # brevity penalty
        return np.take(x, self.unsort, axis=1)


def _bleu_blocks(queries, candidates, tokenize: str, block_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, S[start:start + block_size] / 100) of the BLEU matrix."""
    query_toks, cand_toks = _tokenize_both(queries, candidates, tokenize)
    vocabs: list[dict] = [{} for _ in range(MAX_ORDER)]
    C = _featurize(cand_toks, vocabs, grow=True)
    Q = C if query_toks is cand_toks else _featurize(query_toks, vocabs, grow=False)
    scorer = _BleuScorer(Q, C, np.array([len(t) for t in query_toks]), np.array([len(t) for t in cand_toks]))
    for start in range(0, len(queries), block_size):
        stop = min(start + block_size, len(queries))
        yield start, scorer.block(start, stop)


def _bm25_blocks(queries, candidates, tokenize: str, block_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield blocks of rank-bm25 BM25Okapi.get_scores, as one sparse product per block.

    rank-bm25 fits the model (idf with its epsilon floor, k1, b, avgdl); its get_scores loops
    in Python (~12 ms a query), so the same formula is evaluated as query-idf x document-weight.
    """
    from rank_bm25 import BM25Okapi

    query_toks, cand_toks = _tokenize_both(queries, candidates, tokenize)
    if not any(cand_toks):  # rank-bm25 cannot fit an empty vocabulary; every score would be 0
        cand_toks = [["\0"]] + cand_toks[1:]
    bm = BM25Okapi(cand_toks)
    vocab = {w: i for i, w in enumerate(bm.idf)}
    norm = bm.k1 * (1 - bm.b + bm.b * np.asarray(bm.doc_len, np.float64) / (bm.avgdl or 1.0))
    rows, cols, vals = [], [], []
    for j, freqs in enumerate(bm.doc_freqs):
        for w, f in freqs.items():
            rows.append(j), cols.append(vocab[w]), vals.append(f * (bm.k1 + 1) / (f + norm[j]))
    W = sp.csr_matrix((vals, (rows, cols)), shape=(len(cand_toks), len(vocab)))
    idf = np.array([bm.idf[w] for w in vocab], np.float64)
    q_rows, q_cols = [], []
    for i, toks in enumerate(query_toks):  # a repeated query word counts each time, as in get_scores
        for w in toks:
            if w in vocab:
                q_rows.append(i), q_cols.append(vocab[w])
    Q = sp.csr_matrix((idf[q_cols], (q_rows, q_cols)), shape=(len(query_toks), len(vocab)))
    product = _BlockProduct(Q, W)
    for start in range(0, len(queries), block_size):
        yield start, product.rows(start, min(start + block_size, len(queries)))


# --------------------------------------------------------------------------- top-k
def _topk_rows(S: np.ndarray, k: int, exclude: np.ndarray | None) -> np.ndarray:
    """Indices of the k largest entries of each row, best first, ties to the lower index.

    ``exclude[i] >= 0`` removes column exclude[i] from row i. Modifies S.
    """
    if exclude is not None:
        hit = np.flatnonzero(exclude >= 0)
        S[hit, exclude[hit]] = -np.inf
    cut = S.shape[1] - k
    top = np.argpartition(S, cut, axis=1)[:, cut:]  # the k best, but a tie at the k-th value is cut arbitrarily
    vals = np.take_along_axis(S, top, 1)
    kth = vals.min(axis=1, keepdims=True)
    for i in np.flatnonzero((S == kth).sum(axis=1) > (vals == kth).sum(axis=1)):
        above = np.flatnonzero(S[i] > kth[i])
        top[i] = np.concatenate([above, np.flatnonzero(S[i] == kth[i])[: k - len(above)]])
        vals[i] = S[i, top[i]]
    return np.take_along_axis(top, np.lexsort((top, -vals), axis=1), 1).astype(np.int64)


def _topk(blocks, n_queries: int, k: int, exclude: np.ndarray | None) -> np.ndarray:
    out = np.empty((n_queries, k), np.int64)
    for start, S in blocks:
        stop = start + S.shape[0]
        out[start:stop] = _topk_rows(S, k, None if exclude is None else exclude[start:stop])
    return out


def _search(scorer, queries, candidates, k, exclude, tokenize, block_size) -> np.ndarray:
    """Shared driver of the public top-k functions (arguments already validated)."""
    block_size = _check_block_size(block_size)
    if k == 0 or len(queries) == 0:
        return np.empty((len(queries), k), np.int64)
    make = _bleu_blocks if scorer == "bleu" else _bm25_blocks
    return _topk(make(queries, candidates, tokenize, block_size), len(queries), k, exclude)


def _self_exclusion(queries, candidates, k: int, exclude_self: bool) -> np.ndarray | None:
    if not exclude_self:
        _check_k(k, len(candidates), "candidates")
        return None
    if len(queries) != len(candidates) or list(queries) != list(candidates):
        raise ValueError("exclude_self=True needs queries and candidates to be the same list")
    _check_k(k, len(candidates) - 1, "candidates minus the query itself")
    return np.arange(len(queries))


# --------------------------------------------------------------------------- public API
def bleu_score_matrix(queries: Sequence[str], candidates: Sequence[str], tokenize: str = "13a") -> np.ndarray:
    """S[i, j] = sacrebleu sentence_bleu(candidates[j], [queries[i]]).score, all pairs at once.

    Materializes the whole matrix: meant for small inputs and tests; use bleu_topk for banks.
    """
    S = np.zeros((len(queries), len(candidates)))
    if len(queries) and len(candidates):
        for start, block in _bleu_blocks(queries, candidates, tokenize, DEFAULT_BLOCK_SIZE):
            S[start:start + block.shape[0]] = 100.0 * block
    else:
        _tokenizer(tokenize)  # still validate
    return S


def bleu_topk(queries: Sequence[str], candidates: Sequence[str], k: int, *, exclude_self: bool = False,
              tokenize: str = "13a", block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """(len(queries), k) candidate indices of the k best sentence-BLEU scores, best first.

    Exact (same scores as sacrebleu), ties to the lower index. With ``exclude_self`` queries and
    candidates are the same list and row i never returns i (a row is not its own example).
    """
    exclude = _self_exclusion(queries, candidates, k, exclude_self)
    return _search("bleu", queries, candidates, k, exclude, tokenize, block_size)


def bm25_topk(queries: Sequence[str], candidates: Sequence[str], k: int, *, exclude_self: bool = False,
              tokenize: str = "13a", block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """Like bleu_topk, scored by rank-bm25 BM25Okapi over the same sacrebleu tokens.

    An option, not the default: the paper retrieves by BLEU, and BM25 top-50 reranked by BLEU
    finds the BLEU top-1 only ~80% of the time on NL2Bash.
    """
    exclude = _self_exclusion(queries, candidates, k, exclude_self)
    return _search("bm25", queries, candidates, k, exclude, tokenize, block_size)


@dataclass(frozen=True, eq=False)
class RetrievalBank:
    """Few-shot neighbors of every training row: ``neighbors[i]`` are training-row indices, best first."""

    neighbors: np.ndarray  # (n, k) int64
    scorer: str
    bank_fraction: float
    pool_size: int
    seed: int = 0
    tokenize: str = "13a"

    @property
    def k(self) -> int:
        return int(self.neighbors.shape[1])

    def save(self, path: str | Path) -> None:
        """Write JSON (byte-for-byte deterministic, unlike npz whose zip entries carry timestamps)."""
        doc = {"scorer": self.scorer, "bank_fraction": self.bank_fraction, "pool_size": self.pool_size,
               "seed": self.seed, "tokenize": self.tokenize, "shape": list(self.neighbors.shape),
               "neighbors": self.neighbors.tolist()}
        Path(path).write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RetrievalBank":
        d = json.loads(Path(path).read_text())
        neighbors = np.asarray(d["neighbors"], np.int64).reshape(d["shape"])
        return cls(neighbors, d["scorer"], float(d["bank_fraction"]), int(d["pool_size"]),
                   int(d["seed"]), d["tokenize"])


def _check_fraction(bank_fraction: float) -> float:
    ok = isinstance(bank_fraction, (int, float, np.floating)) and not isinstance(bank_fraction, bool)
    if not ok or not 0.0 < float(bank_fraction) <= 1.0:
        raise ValueError(f"bank_fraction must be a number in (0, 1], got {bank_fraction!r}")
    return float(bank_fraction)


def bank_pool(n: int, bank_fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted training-row indices that may serve as examples: all n, or a seeded random
    round(bank_fraction * n) of them (at least 1) for the bank-size ablation."""
    fraction = _check_fraction(bank_fraction)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    size = n if fraction == 1.0 else min(n, max(1, round(fraction * n)))
    if size == n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)


def build_bank(queries: Sequence[str], k: int, *, scorer: Literal["bleu", "bm25"] = "bleu",
               bank_fraction: float = 1.0, seed: int = 0, tokenize: str = "13a",
               block_size: int = DEFAULT_BLOCK_SIZE) -> RetrievalBank:
    """Top-k few-shot examples of every training row among the training rows, self excluded.

    ``bank_fraction < 1`` (the paper's 25/50% ablation) restricts the candidate pool to a
    seeded random subset of round(fraction * n) rows; every row, in the pool or not, gets k
    neighbors from the pool, never itself, so k <= pool_size - 1.
    """
    _check_scorer(scorer)
    queries = list(queries)
    n = len(queries)
    pool = bank_pool(n, bank_fraction, seed)
    pool_size = len(pool)
    _check_k(k, max(pool_size - 1, 0), f"pool of {pool_size} rows, self excluded")
    position = np.full(n, -1, np.int64)
    position[pool] = np.arange(pool_size)
    candidates = queries if pool_size == n else [queries[i] for i in pool]
    cols = _search(scorer, queries, candidates, k, position, tokenize, block_size)
    return RetrievalBank(pool[cols], scorer, float(bank_fraction), pool_size, int(seed), tokenize)


def retrieve_for(queries: Sequence[str], pool_queries: Sequence[str], k: int,
                 scorer: Literal["bleu", "bm25"] = "bleu", tokenize: str = "13a") -> np.ndarray:
    """Test time: indices into ``pool_queries`` (the training rows) of each new query's k neighbors."""
    _check_scorer(scorer)
    _check_k(k, len(pool_queries), "pool_queries")
    return _search(scorer, queries, pool_queries, k, None, tokenize, DEFAULT_BLOCK_SIZE)
