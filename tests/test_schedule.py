import pytest
from pydantic import ValidationError

from promptintern.schedule import Schedule, linear


def taus_ks(schedule: Schedule):
    return [(s.tau, s.k) for s in schedule.stages()]


def test_paper_default_linear_three_stages():
    assert taus_ks(linear(3, k0=10)) == [(1.0, 10), (0.5, 5), (0.0, 0)]


def test_mbpp_k0_five_gives_5_2_0():
    assert [s.k for s in linear(3, k0=5).stages()] == [5, 2, 0]


def test_tau_floor_stops_the_template_rate():
    assert taus_ks(linear(3, k0=10, tau_floor=0.3)) == [(1.0, 10), (0.65, 5), (0.3, 0)]
    assert linear(3, tau_floor=0.3).inference_stage().tau == 0.3


def test_exponential_falls_faster_than_linear_and_inverse_slower():
    lin = Schedule(pattern="linear", num_stages=5).stages()
    exp = Schedule(pattern="exponential", num_stages=5).stages()
    inv = Schedule(pattern="inverse-exponential", num_stages=5).stages()
    for a, b, c in zip(exp[1:-1], lin[1:-1], inv[1:-1]):
        assert a.tau < b.tau < c.tau
        assert a.k <= b.k <= c.k
    for s in (lin, exp, inv):  # all patterns share the endpoints
        assert (s[0].tau, s[0].k) == (1.0, 10) and (s[-1].tau, s[-1].k) == (0.0, 0)


def test_values_are_monotone_for_every_pattern():
    for pattern in ("linear", "exponential", "inverse-exponential"):
        stages = Schedule(pattern=pattern, num_stages=6, k0=10).stages()
        assert all(a.tau >= b.tau and a.k >= b.k for a, b in zip(stages, stages[1:]))


def test_ablation_switches():
    assert taus_ks(Schedule(absorb_template=False)) == [(1.0, 10), (1.0, 5), (1.0, 0)]
    assert taus_ks(Schedule(absorb_examples=False)) == [(1.0, 0), (0.5, 0), (0.0, 0)]


def test_single_stage_is_direct_fine_tuning():
    assert taus_ks(Schedule(num_stages=1, k0=4)) == [(1.0, 4)]


def test_direct_fine_tuning_forms_use_tau0():
    assert taus_ks(Schedule(num_stages=1, tau0=0.6, k0=5)) == [(0.6, 5)]
    assert taus_ks(Schedule(num_stages=1, tau0=0.0, k0=0)) == [(0.0, 0)]
    assert taus_ks(Schedule(num_stages=3, tau0=0.8, tau_floor=0.2, k0=4)) == [(0.8, 4), (0.5, 2), (0.2, 0)]


def test_tau_floor_above_tau0_is_refused():
    with pytest.raises(ValidationError, match="tau_floor"):
        Schedule(tau0=0.3, tau_floor=0.5)


def test_distinct_taus():
    assert linear(3).distinct_taus() == [1.0, 0.5, 0.0]


@pytest.mark.parametrize("bad", [{"pattern": "cosine"}, {"num_stages": 0}, {"tau_floor": 1.5},
                                 {"k0": -1}, {"stages": 3}])
def test_bad_schedules_name_the_key(bad):
    with pytest.raises(ValidationError) as err:
        Schedule(**bad)
    assert next(iter(bad)) in str(err.value)
