"""NL2Bash metrics: the NLC2CMD structure score on hand-checked cases, BLEU unchanged."""

import pytest
import sacrebleu

from promptintern.evaluate import score
from promptintern.evaluate.nl2bash import (Utility, command_structure, flag_score, nlc2cmd_pair,
                                           structure_score)


def names(command):
    return [u.name for u in command_structure(command).utilities]


def flags(command, i=0):
    return set(command_structure(command).utilities[i].flags)


def test_identical_command_scores_one():
    for cmd in ["ls", "ls -la", "find . -name '*.py' | xargs grep -l foo", "du -sh ~ && df -h"]:
        assert nlc2cmd_pair(cmd, cmd) == 1.0


def test_different_utility_scores_minus_one():
    assert nlc2cmd_pair("ls -l", "cd /tmp") == -1.0
    assert nlc2cmd_pair("sort f | uniq", "uniq f | sort") == -1.0  # position matters


def test_partial_flag_overlap_is_the_formula():
    # F = {-l,-a,-h}, F* = {-l,-t}: S_F = (2*1 - 4) / 3 = -2/3, S_U = (1 - 2/3) / 2 = 1/6
    assert nlc2cmd_pair("ls -l -a -h", "ls -l -t") == pytest.approx(1 / 6)
    assert flag_score(frozenset({"-l", "-a", "-h"}), frozenset({"-l", "-t"})) == pytest.approx(-2 / 3)
    # one side has no flags: S_F = -1, S_U = 0; neither side: S_F = 1
    assert nlc2cmd_pair("ls", "ls -l") == 0.0
    assert flag_score(frozenset(), frozenset()) == 1.0


def test_pipelines_are_normalized_by_the_longer_sequence():
    # cat=cat (1), sort vs sort -r (0), uniq -c = uniq -c (1), head missing (-1): 1/4
    assert nlc2cmd_pair("cat f | sort | uniq -c", "cat f | sort -r | uniq -c | head") == pytest.approx(0.25)
    assert nlc2cmd_pair("cat f | sort -r | uniq -c | head", "cat f | sort | uniq -c") == pytest.approx(0.25)
    # find{-name,-exec} vs find{-name}: S_F = 0 -> 0.5; rm vs xargs: -1; extra rm: -1 -> -1.5/3
    assert nlc2cmd_pair(r"find . -name '*.txt' -exec rm {} \;", "find . -name '*.txt' | xargs rm -f") == pytest.approx(-0.5)
    assert structure_score([], [Utility("ls", frozenset())]) == -1.0


def test_command_structure_heuristics():
    assert flags("ls -la") == flags("ls -al") == flags("ls -l -a") == {"-l", "-a"}
    assert flags("find . -name x -type f -mtime -7 -print0") == {"-name", "-type", "-mtime", "-print0"}
    assert flags("ls --color=auto") == {"--color"}
    assert flags("grep -- -v file") == set()
    assert names("find . -name '*.log' -exec rm -f {} + | wc -l") == ["find", "rm", "wc"]
    assert flags("find . -exec rm -f {} +", 1) == {"-f"}
    assert names("echo $(date +%s) `whoami`; cat <(ls)") == ["echo", "date", "whoami", "cat", "ls"]
    assert names("find . | xargs -n 1 -I {} cp {} /tmp") == ["find", "xargs", "cp"]
    assert flags("find . | xargs -n 1 -I {} cp {} /tmp", 1) == {"-n", "-I"}
    assert names("X=1 sudo -u bob ls -l > out.txt 2>&1") == ["sudo", "ls"]
    assert names("for f in *; do echo $f; done") == ["echo"]


def test_unparseable_commands_are_scored_not_crashed():
    for bad in ["echo $((1+2))", "ls |", "echo 'unterminated", "case $x in a) echo;; esac", ")))(((", "time ls -l"]:
        structure = command_structure(bad)
        assert not structure.parsed
        assert -1.0 <= nlc2cmd_pair(bad, "ls -l") <= 1.0
    assert nlc2cmd_pair("ls -l |", "ls -l") == 1.0  # the fallback still finds `ls -l`
    assert nlc2cmd_pair("echo $((1+2))", "echo 3") == 1.0
    assert nlc2cmd_pair("time ls -l", "time ls -l") == 1.0
    assert nlc2cmd_pair("", "ls") == -1.0  # nothing extracted
    assert nlc2cmd_pair("", "") == 1.0 and nlc2cmd_pair("A=1", "B=2") == 0.0


def test_score_keeps_bleu_and_adds_nlc2cmd():
    preds = ["ls -la", "find . -name '*.py'", "du -sh ~", "echo $((1+2))"]
    refs = ["ls -a", "find . -name '*.py'", "df -h", "echo 3"]
    result = score("nl2bash", preds, refs)
    assert result["bleu"] == round(sacrebleu.corpus_bleu(preds, [refs], tokenize="13a").score, 4)
    assert "tok:13a" in result["sacrebleu_signature"]
    assert result["exact_match"] == 25.0 and result["metric"] == "bleu" and result["n"] == 4
    # ls -la vs ls -a: S_F = (2*1-2)/2 = 0 -> 0.5; identical 1; du vs df -1; echo = echo 1
    assert result["nlc2cmd"] == pytest.approx((0.5 + 1 - 1 + 1) / 4)
    assert result["nlc2cmd_unparsed"] == {"predictions": 1, "references": 0}
