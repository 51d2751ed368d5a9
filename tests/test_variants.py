import pytest

from promptintern.variants import NOT_YET, VARIANTS, variant_config


def forms(cfg):
    return [(s.tau, s.k) for s in cfg.schedule.stages()]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_is_a_valid_config(name):
    cfg = variant_config(name, "tiny")
    assert cfg.schedule.stages()


def test_variants_set_what_the_paper_describes():
    base = variant_config("promptintern", "cpu-demo", {"schedule": {"k0": 10}})
    assert forms(base) == [(1.0, 10), (0.5, 5), (0.0, 0)]
    assert forms(variant_config("promptintern-tau-floor-0.3", "cpu-demo", {"schedule": {"k0": 10}}))[-1] == (0.3, 0)
    assert forms(variant_config("direct-template-kshot", "cpu-demo", {"schedule": {"k0": 10}})) == [(1.0, 10)]
    assert forms(variant_config("direct-template-0.6-halfk", "cpu-demo", {"schedule": {"k0": 10}})) == [(0.6, 5)]
    assert forms(variant_config("direct-no-template", "cpu-demo")) == [(0.0, 0)]
    assert forms(variant_config("no-template-compression", "cpu-demo", {"schedule": {"k0": 10}})) == [(1.0, 10), (1.0, 5), (1.0, 0)]
    llm = variant_config("longllmlingua-0.3", "cpu-demo")
    assert forms(llm) == [(0.3, 0)] and llm.compression.method == "longllmlingua"
    assert variant_config("bank-25", "cpu-demo").retrieval.bank_fraction == 0.25


def test_user_overrides_win_over_the_variant():
    cfg = variant_config("schedule-exponential", "tiny", {"schedule": {"pattern": "linear"}})
    assert cfg.schedule.pattern == "linear"


def test_unknown_and_unavailable_variants_say_why():
    with pytest.raises(ValueError, match="allowed"):
        variant_config("promptintern-turbo", "tiny")
    for name in NOT_YET:
        with pytest.raises(ValueError, match="not available"):
            variant_config(name, "tiny")
