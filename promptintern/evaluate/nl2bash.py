"""NL2Bash scores: corpus BLEU, exact match and the NLC2CMD command-structure score.

BLEU convention (one, fixed): sacrebleu ``corpus_bleu`` with its default ``13a`` tokenizer, one
reference per command, default exponential smoothing; the signature is stored with every score
because the tokenizer alone moves NL2Bash BLEU by ~2x (DESIGN.md). Exact match compares after
whitespace normalization.

NLC2CMD score (Agarwal et al., "NeurIPS 2020 NLC2CMD Competition: Translating Natural Language to
Bash Commands", PMLR 133, 2021, section 3; the competition's ``metric_utils.compute_metric`` with
u1 = u2 = 1 and confidence 1). A command becomes the sequence of its utilities U = (u_1, ..., u_T),
each with its set of flags F(u_i). For position i, with prediction u, F and reference u*, F*:

    S_F^i = (2 |F ∩ F*| - |F ∪ F*|) / max(1, |F|, |F*|)          (= 1 when F and F* are both empty)
    S_U^i = I[u = u*] * (1 + S_F^i) / 2  -  (1 - I[u = u*])
    S     = (1 / T) * sum_i S_U^i,   T = max(|U_pred|, |U_ref|)

The shorter sequence is padded with "no utility", which never matches (S_U^i = -1 there), so a
missing or extra utility costs -1 / T. The competition takes the max of S over references; NL2Bash
has one reference per command, so S is the pair score. S lies in [-1, 1]; ``score`` reports its
mean over the corpus. Two commands that both yield no utility at all (blank, or only assignments)
score 1 when their whitespace-normalized text is equal and 0 otherwise (the competition: 0).

How a command becomes (utility, flags) pairs -- the competition used Tellina's bashlint (man-page
grammars); here bashlex 0.18 plus a few documented heuristics, applied identically to both sides:

* Utilities are the first word of every simple command, in source order: pipelines, ``;``/``&&``/
  ``||`` lists, compound bodies (``for``/``if``/``while``), ``$(...)``, backticks and ``<(...)``
  (a nested command comes right after the command that contains it, as in bashlint's pre-order
  walk). Leading ``VAR=value`` assignments are skipped; names are compared lower-cased.
* Commands run by other commands are utilities of their own: ``find -exec/-execdir/-ok/-okdir CMD
  ... ;|+`` and the wrappers ``xargs``, ``sudo``, ``nohup``, ``time``, ``nice``, ``env``, ``exec``,
  ``watch``, ``timeout`` (after their own options). Their flags belong to the nested command (bashlint
  also counts them under the outer utility; we do not).
* Flags are words starting with ``-`` (not ``-`` or ``--``, nothing after ``--``). ``--opt=value``
  counts as ``--opt``. Bundled short flags are split: ``-la`` -> ``-l``, ``-a``; ``-n5`` -> ``-n``;
  except for utilities whose options are single-dash words (``find``, ``java``, ``gcc``, ...), where
  ``-name`` stays ``-name``. For ``find`` the argument of a test (``-mtime -7``, ``-size -10k``) is a
  value, not a flag. ``-5`` (as in ``head -5``, ``xargs -0``) is a flag.

Commands bashlex cannot parse (it rejects ``$((...))``, ``case``, unbalanced quotes, a trailing
``|``...) are not dropped: a fallback splits the text at unquoted ``|``, ``;`` and ``&`` into simple
commands and those into words (``shlex``, or plain whitespace when the quoting is broken), and the
same rules apply. Whatever yields no utility at all scores -1 against a reference that has some.
``score`` counts the predictions and references that needed the fallback (``nlc2cmd_unparsed``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, NamedTuple, Sequence

from promptintern.evaluate.common import exact_match, normalize_ws

BLEU_TOKENIZE = "13a"


def extract(text: str) -> str:
    """A completion's first non-empty line is the command."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def score(predictions: Sequence[str], references: Sequence[str]) -> dict:
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize=BLEU_TOKENIZE)
    result = bleu.corpus_score(list(predictions), [list(references)])
    structure = nlc2cmd_corpus(predictions, references)
    return {
        "metric": "bleu",
        "bleu": round(result.score, 4),
        "exact_match": round(exact_match(predictions, references), 4),
        "nlc2cmd": round(structure["mean"], 4),
        "nlc2cmd_unparsed": structure["unparsed"],
        # BLEU's brevity penalty and length ratio: a model that answers short loses BLEU for it alone
        "brevity_penalty": round(result.bp, 4),
        "length_ratio": round(result.sys_len / result.ref_len, 4) if result.ref_len else 0.0,
        "sacrebleu_signature": str(bleu.get_signature()),
        "n": len(references),
    }


# ---------------------------------------------------------------------------------------------
# NLC2CMD structure score
# ---------------------------------------------------------------------------------------------


class Utility(NamedTuple):
    name: str
    flags: frozenset[str]


class Structure(NamedTuple):
    """A command as NLC2CMD sees it; ``parsed`` is False when bashlex failed and the fallback ran."""

    utilities: tuple[Utility, ...]
    parsed: bool


def flag_score(flags: frozenset[str], ref_flags: frozenset[str]) -> float:
    """S_F = (2|F ∩ F*| - |F ∪ F*|) / max(1, |F|, |F*|); 1.0 when neither side has a flag."""
    if not flags and not ref_flags:
        return 1.0
    return (2 * len(flags & ref_flags) - len(flags | ref_flags)) / max(1, len(flags), len(ref_flags))


def structure_score(pred: Sequence[Utility], ref: Sequence[Utility]) -> float:
    """S = (1/T) sum_i S_U^i over positions, T = max(|pred|, |ref|); see the module docstring."""
    total_positions = max(len(pred), len(ref))
    if total_positions == 0:
        return 0.0
    total = 0.0
    for i in range(total_positions):
        if i >= len(pred) or i >= len(ref) or pred[i].name != ref[i].name:
            total -= 1.0
        else:
            total += (1.0 + flag_score(pred[i].flags, ref[i].flags)) / 2.0
    return total / total_positions


def nlc2cmd_pair(prediction: str, reference: str) -> float:
    """The NLC2CMD score of one prediction against its one reference, in [-1, 1]."""
    pred, ref = command_structure(prediction), command_structure(reference)
    if not pred.utilities and not ref.utilities:
        return 1.0 if normalize_ws(prediction) == normalize_ws(reference) else 0.0
    return structure_score(pred.utilities, ref.utilities)


def nlc2cmd_corpus(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Mean pair score, and how many commands on each side bashlex could not parse."""
    scores = [nlc2cmd_pair(p, r) for p, r in zip(predictions, references)]
    unparsed = {
        "predictions": sum(not command_structure(p).parsed for p in predictions),
        "references": sum(not command_structure(r).parsed for r in references),
    }
    return {"mean": sum(scores) / len(scores) if scores else 0.0, "unparsed": unparsed}


@lru_cache(maxsize=8192)
def command_structure(command: str) -> Structure:
    """The (utility, flags) sequence of a command; never raises."""
    if not command.strip():
        return Structure((), parsed=True)
    try:
        words_per_command = _bashlex_commands(command)
        parsed = True
    except Exception:  # bashlex raises ParsingError, NotImplementedError, AttributeError, ...
        words_per_command = _fallback_commands(command)
        parsed = False
    utilities: list[Utility] = []
    for words in words_per_command:
        utilities.extend(_utilities(words))
    return Structure(tuple(utilities), parsed)


# --- words ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Word:
    """One word of a simple command, with the simple commands substituted inside it ($(...))."""

    text: str
    nested: tuple[tuple["_Word", ...], ...] = ()


def _bashlex_commands(command: str) -> list[tuple[_Word, ...]]:
    """Top-level simple commands, in source order, each as its words (leading assignments too)."""
    import bashlex

    return [cmd for tree in bashlex.parse(command) for cmd in _simple_commands(tree)]


def _children(node) -> Iterable:
    for attr in ("parts", "list", "command", "output"):
        value = getattr(node, attr, None)
        if isinstance(value, list):
            yield from value
        elif value is not None and hasattr(value, "kind"):
            yield value


def _simple_commands(node) -> list[tuple[_Word, ...]]:
    """Every simple command not inside a word of another command (those ride along in _Word)."""
    if node.kind == "command":
        words = []
        for part in node.parts:
            if part.kind in ("word", "assignment"):
                words.append(_Word(part.word, _substituted(part)))
            elif part.kind == "redirect":  # `> $(cmd)`: keep the nested command, not the target
                nested = _substituted(part)
                if nested:
                    words.append(_Word("", nested))
        return [tuple(words)]
    return [cmd for child in _children(node) for cmd in _simple_commands(child)]


def _substituted(node) -> tuple[tuple[_Word, ...], ...]:
    """Commands inside $(...), backticks and <(...) anywhere below a word or redirect."""
    found: list[tuple[_Word, ...]] = []
    for child in _children(node):
        if child.kind in ("commandsubstitution", "processsubstitution"):
            found.extend(_simple_commands(child.command))
        else:
            found.extend(_substituted(child))
    return tuple(found)


_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
_FALLBACK_SKIP = {"!", "{", "}", "(", ")", "if", "then", "else", "elif", "fi", "do", "done",
                  "while", "until"}


def _fallback_commands(command: str) -> list[tuple[_Word, ...]]:
    """Split at unquoted | ; & and newlines, then into words (shlex, or whitespace if that fails)."""
    segments, current, quote, escaped = [], [], "", False
    for char in command:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quote != "'":
            current.append(char)
            escaped = True
        elif quote:
            current.append(char)
            quote = "" if char == quote else quote
        elif char in "'\"":
            current.append(char)
            quote = char
        elif char in "|;&\n":
            segments.append("".join(current))
            current = []
        else:
            current.append(char)
    segments.append("".join(current))

    commands = []
    for segment in segments:
        try:
            tokens = shlex.split(segment)
        except ValueError:  # unbalanced quotes
            tokens = segment.split()
        tokens = [t for t in tokens if not re.fullmatch(r"\d*[<>]+&?\d*-?", t)]  # bare redirects
        while tokens and (tokens[0] in _FALLBACK_SKIP or _ASSIGNMENT.match(tokens[0])):
            tokens.pop(0)
        if tokens:
            commands.append(tuple(_Word(t) for t in tokens))
    return commands


# --- words -> utilities -----------------------------------------------------------------------

# utilities whose options are single-dash words (`find -name`), so `-name` is not `-n -a -m -e`
_SINGLE_DASH_LONG = {"find", "java", "javac", "gcc", "g++", "cc", "clang", "ffmpeg", "openssl",
                     "convert", "mogrify", "identify"}
# find tests / actions whose next word is their value
_FIND_WITH_VALUE = {
    "-name", "-iname", "-path", "-ipath", "-wholename", "-iwholename", "-regex", "-iregex",
    "-lname", "-ilname", "-type", "-xtype", "-size", "-perm", "-user", "-group", "-uid", "-gid",
    "-mtime", "-mmin", "-atime", "-amin", "-ctime", "-cmin", "-newer", "-anewer", "-cnewer",
    "-maxdepth", "-mindepth", "-links", "-inum", "-samefile", "-fstype", "-used", "-printf",
    "-fprintf", "-fprint", "-fprint0", "-fls", "-regextype", "-context",
}
_FIND_EXEC = {"-exec", "-execdir", "-ok", "-okdir"}
# utilities that run a command: (their options that take a separate value, positionals before it)
_WRAPPERS: dict[str, tuple[frozenset[str], int]] = {
    "xargs": (frozenset({"-n", "-I", "-i", "-L", "-l", "-P", "-d", "-E", "-e", "-s", "-a"}), 0),
    "sudo": (frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-U", "-r", "-t"}), 0),
    "nice": (frozenset({"-n"}), 0),
    "env": (frozenset({"-u", "-C", "-S"}), 0),
    "watch": (frozenset({"-n", "-d"}), 0),
    "timeout": (frozenset({"-s", "-k"}), 1),
    "nohup": (frozenset(), 0),
    "time": (frozenset(), 0),
    "exec": (frozenset(), 0),
}


def _flags(utility: str, word: str) -> list[str]:
    """The flag names in one word ([] when the word is not a flag)."""
    if len(word) < 2 or not word.startswith("-") or word == "--":
        return []
    if word.startswith("--"):
        return [word.split("=", 1)[0]]
    if utility in _SINGLE_DASH_LONG or not word[1].isalpha():
        return [word]
    letters = re.match(r"-([A-Za-z]+)", word).group(1)
    return [f"-{letter}" for letter in letters]


def _utilities(words: Sequence[_Word]) -> list[Utility]:
    """One simple command's words -> its utility, then the utilities nested in it, in order."""
    words, lead = list(words), []
    while words and (not words[0].text or _ASSIGNMENT.match(words[0].text)):
        # `X=$(cmd) ...`, a redirect `> $(cmd)`: not the utility, but what runs inside counts
        lead.extend(u for cmd in words.pop(0).nested for u in _utilities(cmd))
    if not words:
        return lead
    name = words[0].text.lower()
    flags: set[str] = set()
    after: list[Utility] = [u for cmd in words[0].nested for u in _utilities(cmd)]
    wrapper = _WRAPPERS.get(name)
    positionals_left = wrapper[1] if wrapper else 0
    end_of_options = False
    i = 1
    while i < len(words):
        word = words[i]
        after.extend(u for cmd in word.nested for u in _utilities(cmd))
        text = word.text
        if name == "find" and text in _FIND_EXEC:
            flags.add(text)
            end = next((j for j in range(i + 1, len(words)) if words[j].text in (";", "+")), len(words))
            after.extend(_utilities(words[i + 1 : end]))
            i = end + 1
            continue
        if text == "--":
            end_of_options = True
        elif not end_of_options and _flags(name, text):
            flags.update(_flags(name, text))
            takes_value = (name == "find" and text in _FIND_WITH_VALUE) or (
                wrapper is not None and text in wrapper[0]
            )
            if takes_value and i + 1 < len(words):
                i += 1
                after.extend(u for cmd in words[i].nested for u in _utilities(cmd))
        elif text and wrapper is not None and not (name == "env" and "=" in text):
            if positionals_left == 0:
                after.extend(_utilities(words[i:]))
                break
            positionals_left -= 1
        i += 1
    return lead + [Utility(name, frozenset(flags))] + after


def score_rows(predictions: Sequence[str], examples: Sequence) -> dict:
    """The task-file form (``metric.callable``): BLEU, exact match and NLC2CMD against the rows' targets."""
    return score(predictions, [ex.target for ex in examples])
