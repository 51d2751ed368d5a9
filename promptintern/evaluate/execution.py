"""Pass@1 by executing asserts in the sandbox, with a verdict that does not trust the program.

    from promptintern.sandbox import Sandbox
    from promptintern.evaluate.execution import mbpp_pass_at_1, mbpp_reference_check
    with Sandbox() as sb:
        print(mbpp_reference_check(examples, sb)["pass@1"])   # the dataset's own code: ~100%

How a program is judged. Each test is parsed with ``ast``:

* ``assert EXPR == LITERAL`` (either side ``ast.literal_eval``-able): the child evaluates EXPR and
  prints its value as a literal, framed by a per-run random nonce; the *parent* compares
  ``ast.literal_eval(that text) == LITERAL``. The child builds that text itself from the value's
  builtin contents (base-class methods, so a subclass cannot lie through ``__eq__``, ``__repr__``,
  ``__iter__``...); a value of any other type (a custom object, numpy scalar, Decimal) fails.
  Floats compare exactly, as the raw assert would (``1 == 1.0``, ``(1, 2) != [1, 2]``, sets are
  unordered, an infinity equals ``1e400``); NaN, sets nested in sets and texts that do not
  literal_eval fail.
* any other test runs raw in the child; an exception (AssertionError, SystemExit...) fails it.

Pass = exit status 0, a frame for every value test that compares equal, and the final nonce line,
printed only after every test ran. A program that exits early (``exit(0)``), crashes, prints a
fake success line or returns an always-true ``__eq__`` object does not pass. Limits: the nonce is in
the program's own source, so code written to read the harness (its file, or the interpreter's
memory) could forge the frames; the verdict is robust to wrong, lazy, crashing and reward-hacking
code, not to a program written against this harness.

Order inside the child, as in MBPP: the completion, then ``test_setup_code``, then the tests, all
in one namespace with ``__name__ == "__main__"``.
"""

from __future__ import annotations

import ast
import builtins
import secrets
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Sequence

from promptintern.sandbox import RLIMITS_WARNING, Sandbox, Verdict

MAX_REPR = 32 * 1024  # a value test's literal text; longer is a failure (stdout tail is 256 KiB)
# Exceptions that mean the sandbox said no (a limit or a denied operation): "blocked", not "failed".
DENIED = {"MemoryError", "PermissionError", "BlockingIOError", "ConnectionRefusedError"}
DENIED_ERRNO = {1, 11, 13, 24, 27, 28, 30, 101, 122}  # EPERM EAGAIN EACCES EMFILE EFBIG ENOSPC EROFS ENETUNREACH EDQUOT


@dataclass(frozen=True)
class TestPlan:
    __test__ = False  # not a pytest test class
    kind: str  # "value": the child reports EXPR, the parent compares; "raw": the child runs it
    source: str  # the expression (value) or the statements (raw)
    expected: Any = None
    original: str = ""


def plan_test(test: str) -> TestPlan:
    """Classify one test string (see the module docstring)."""
    try:
        tree = ast.parse(test.strip())
    except SyntaxError:
        return TestPlan("raw", test, original=test)
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
        node = tree.body[0].test
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
            for expr, lit in ((node.left, node.comparators[0]), (node.comparators[0], node.left)):
                try:
                    expected = ast.literal_eval(lit)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    continue
                return TestPlan("value", ast.unparse(expr), expected, original=test)
    return TestPlan("raw", test, original=test)


# The child: captures what it needs before the program runs, then runs program, setup and tests in
# one namespace and prints the frames in a single write after the last test.
_HARNESS = r'''
def _pi_harness(nonce, code, setup, tests, max_repr):
    import builtins, os, sys  # not traceback: 15 ms of imports, paid only on failure
    b = builtins
    write, exit_, isinstance_, repr_, len_, compile_, exec_, eval_, type_ = (
        os.write, os._exit, b.isinstance, b.repr, b.len, b.compile, b.exec, b.eval, b.type)
    int_, float_, complex_, str_, bytes_, getattr_ = b.int, b.float, b.complex, b.str, b.bytes, b.getattr
    tuple_, list_, dict_, set_, frozenset_ = b.tuple, b.list, b.dict, b.set, b.frozenset
    budget = [100000]

    def canon(v, depth=0, hashable=False):
        budget[0] -= 1
        if depth > 200 or budget[0] < 0:
            raise ValueError("value too large or too deep")
        if v is None or v is True or v is False:
            return v
        if isinstance_(v, int_):
            return int_.__int__(v)
        if isinstance_(v, float_):
            return float_.__float__(v)
        if isinstance_(v, complex_):
            return complex_.__add__(v, 0j)
        if isinstance_(v, str_):
            return str_.__str__(v)
        if isinstance_(v, bytes_):
            return bytes_.__add__(v, b"")
        if isinstance_(v, tuple_):
            return tuple_([canon(x, depth + 1, hashable) for x in tuple_.__iter__(v)])
        if isinstance_(v, list_):
            return [canon(x, depth + 1) for x in list_.__iter__(v)]
        if isinstance_(v, dict_):
            return {canon(k, depth + 1, True): canon(x, depth + 1) for k, x in dict_.items(v)}
        if isinstance_(v, (set_, frozenset_)):
            members = set_.__iter__(v) if isinstance_(v, set_) else frozenset_.__iter__(v)
            items = [canon(x, depth + 1, True) for x in members]
            return frozenset_(items) if hashable else set_(items)
        raise TypeError("unsupported result type " + type_(v).__module__ + "." + type_(v).__name__)

    def lit(v):
        """Literal text of a canonical value; an infinity as 1e999 (a float literal), NaN as nan."""
        t = type_(v)
        if t is float_ and v - v != 0.0:
            return "nan" if v != v else ("1e999" if v > 0 else "-1e999")
        if t is list_:
            return "[" + ", ".join([lit(x) for x in v]) + "]"
        if t is tuple_:
            return "(" + ", ".join([lit(x) for x in v]) + ("," if len_(v) == 1 else "") + ")"
        if t is dict_:
            return "{" + ", ".join([lit(k) + ": " + lit(x) for k, x in v.items()]) + "}"
        if t is set_ or t is frozenset_:
            return "{" + ", ".join([lit(x) for x in v]) + "}" if v else "set()"
        return repr_(v)

    def emit(lines):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        data = ("\n" + "\n".join(lines) + "\n").encode()
        while data:
            data = data[write(1, data):]

    def fail(where, exc):
        try:
            import traceback
            traceback.print_exc()
        except BaseException:
            pass
        try:
            name = str_.__str__(type_(exc).__name__)
            errno = getattr_(exc, "errno", None)
            if isinstance_(errno, int_):
                name += ":" + str_(int_.__int__(errno))
        except BaseException:
            name = "?"
        emit([nonce + " F " + str_(where) + " " + name])
        exit_(1)

    ns = {"__name__": "__main__", "__builtins__": b}
    try:
        exec_(compile_(code, "<program>", "exec"), ns)
    except BaseException as exc:
        fail("program", exc)
    try:
        if setup:
            exec_(compile_(setup, "<test_setup_code>", "exec"), ns)
    except BaseException as exc:
        fail("setup", exc)
    frames = []
    for i, (kind, src) in enumerate(tests):
        try:
            if kind == "value":
                value = eval_(compile_(src, "<test %d>" % i, "eval"), ns)
                try:
                    text = lit(canon(value))
                    if len_(text) > max_repr:
                        text = "!too long: %d characters" % len_(text)
                except BaseException as exc:
                    text = "!" + str_.__str__(str_(exc))[:200]
                frames.append(nonce + " V " + str_(i) + " " + text)
            else:
                exec_(compile_(src, "<test %d>" % i, "exec"), ns)
        except BaseException as exc:
            fail(i, exc)
    emit(frames + [nonce + " OK"])
    exit_(0)
'''


def build_program(code: str, plans: Sequence[TestPlan], setup: str = "", nonce: str | None = None) -> tuple[str, str]:
    """The child's source and its nonce. The program text travels as a string literal, so a
    completion with a syntax error fails as a test failure, not as a harness crash."""
    nonce = nonce or secrets.token_hex(16)
    tests = [(p.kind, p.source) for p in plans]
    source = (f"{_HARNESS}\n_pi_harness({nonce!r}, {code!r}, {setup!r}, {tests!r}, {MAX_REPR})\n")
    return source, nonce


def judge(verdict: Verdict, plans: Sequence[TestPlan], nonce: str) -> Verdict:
    """The parent's verdict from the child's process result and nonce-framed output."""
    if verdict.status in ("timeout", "error"):
        return verdict
    values, failure, ok = {}, None, False
    for line in verdict.stdout.splitlines():
        if not line.startswith(nonce + " "):
            continue
        kind, _, rest = line[len(nonce) + 1:].partition(" ")
        if kind == "V":
            index, _, text = rest.partition(" ")
            values.setdefault(index, []).append(text)
        elif kind == "F":
            failure = rest
        elif kind == "OK":
            ok = True

    def out(status: str, detail: str) -> Verdict:
        if verdict.status == "blocked":  # a limit or a denied operation, seen by the sandbox
            status = "blocked"
        return replace(verdict, status=status, detail=detail)

    if failure is not None:
        where, _, exc = failure.partition(" ")
        where = where if where in ("program", "setup") else f"test {where}"
        name, _, errno = exc.partition(":")
        denied = name in DENIED or (errno.isdigit() and int(errno) in DENIED_ERRNO)
        return out("blocked" if denied else "failed", f"{where}: {exc}")
    if not ok or verdict.returncode != 0:
        return out("failed", f"no pass line (exit status {verdict.returncode}: {verdict.detail})")
    for i, plan in enumerate(plans):
        if plan.kind != "value":
            continue
        texts = values.get(str(i), [])
        if len(texts) != 1:
            return out("failed", f"test {i}: {len(texts)} result frames")
        text = texts[0]
        if text.startswith("!"):
            return out("failed", f"test {i}: {text[1:]}")
        try:
            got = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return out("failed", f"test {i}: result {text[:80]!r} is not a literal")
        if not _equal(got, plan.expected):
            return out("failed", f"test {i}: got {text[:120]}, expected {plan.expected!r:.120}")
    return replace(verdict, status="passed", detail=f"{len(plans)} tests passed")


def _equal(got: Any, expected: Any) -> bool:
    try:
        return bool(got == expected)
    except Exception:  # noqa: BLE001 - e.g. comparing huge ints; not equal
        return False


def run_tests_many(sandbox: Sandbox, items: Sequence[tuple[str, Sequence[str], str]]) -> list[Verdict]:
    """Judge many (code, tests, setup) triples, ``sandbox.workers`` at a time."""
    jobs = []
    for code, tests, setup in items:
        plans = [plan_test(t) for t in tests]
        source, nonce = build_program(code, plans, setup)
        jobs.append((source, plans, nonce))
    verdicts = sandbox.run_many([source for source, _, _ in jobs])
    return [judge(v, plans, nonce) for v, (_, plans, nonce) in zip(verdicts, jobs)]


def run_tests(sandbox: Sandbox, code: str, tests: Sequence[str], setup: str = "") -> Verdict:
    return run_tests_many(sandbox, [(code, tests, setup)])[0]


def pass_at_1(ids: Sequence, verdicts: Sequence[Verdict], seconds: float, sandbox: Sandbox) -> dict:
    """The summary shared by MBPP and HumanEval."""
    n = len(verdicts)
    passed = sum(v.passed for v in verdicts)
    return {
        "metric": "pass@1",
        "pass@1": round(100.0 * passed / n, 4) if n else 0.0,
        "n": n,
        "passed": passed,
        "statuses": dict(Counter(v.status for v in verdicts)),
        "programs_per_s": round(n / seconds, 2) if seconds > 0 else None,
        "seconds": round(seconds, 2),
        "sandbox": {"mode": sandbox.mode, "workers": sandbox.workers, "timeout_s": sandbox.timeout_s,
                    "wall_s": sandbox.wall_s, "memory_mb": sandbox.memory_mb, "python": sandbox.python,
                    "as_root": sandbox.drop_uid,
                    "warning": RLIMITS_WARNING if sandbox.mode == "rlimits" and not sandbox.drop_uid else None},
        "verdict": "parent-side literal compare where the assert allows, else raw asserts + nonce",
        "per_task": [{"id": i, "status": v.status, "detail": v.detail, "wall_s": v.wall_s}
                     for i, v in zip(ids, verdicts)],
        "failed_ids": [i for i, v in zip(ids, verdicts) if not v.passed],
    }


def mbpp_pass_at_1(examples: Sequence, completions: Sequence[str], sandbox: Sandbox) -> dict:
    """MBPP Pass@1 of ``completions`` (Python source, already extracted from the model's reply:
    ``promptintern.datasets.postprocess("mbpp", text)``), one per example, each judged against the
    example's ``test_list`` after its ``test_setup_code``."""
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions for {len(examples)} examples")
    items = [(code, ex.meta["test_list"], ex.meta.get("test_setup_code", "") or "")
             for code, ex in zip(completions, examples)]
    start = time.monotonic()
    verdicts = run_tests_many(sandbox, items)
    return pass_at_1([ex.meta["task_id"] for ex in examples], verdicts, time.monotonic() - start, sandbox)


def reference_code(example) -> str:
    """The dataset's own solution (the ``code`` field, kept as the fenced target)."""
    from promptintern.evaluate.mbpp import extract

    return extract(example.target)


def empty_function(example) -> str:
    """A stub of the function the tests call: ``def name(*args, **kwargs): pass``."""
    for test in example.meta["test_list"]:
        try:
            tree = ast.parse(test.strip())
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not hasattr(builtins, node.func.id):
                return f"def {node.func.id}(*args, **kwargs):\n    pass\n"
    return "pass\n"


def mbpp_reference_check(examples: Sequence, sandbox: Sandbox) -> dict:
    """Pass@1 of the dataset's own ``code``: ~100%; ``failed_ids`` are tasks whose tests are broken."""
    return mbpp_pass_at_1(examples, [reference_code(ex) for ex in examples], sandbox)
