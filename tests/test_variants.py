import pytest

import json

from promptintern.variants import VARIANTS, VariantUnavailable, variant_config

# What the variants that need an external compressor input are given to be valid.
NEEDS = {
    "llmlingua2-0.3": {"compression": {"model": "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"}},
    "gpt4-compression-0.3": {"compression": {"endpoint": "http://localhost:8000/v1"}},
}


def forms(cfg):
    return [(s.tau, s.k) for s in cfg.schedule.stages()]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_is_a_valid_config(name):
    cfg = variant_config(name, "tiny", NEEDS.get(name))
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


def test_compression_baselines_are_one_stage_at_0_3():
    for name, method in [("llmlingua-0.3", "llmlingua"), ("llmlingua2-0.3", "llmlingua2"),
                         ("selective-context-0.3", "selective-context"), ("gpt4-compression-0.3", "api")]:
        cfg = variant_config(name, "cpu-demo", NEEDS.get(name))
        assert forms(cfg) == [(0.3, 0)] and cfg.compression.method == method
    gpt4 = variant_config("gpt4-compression-0.3", "cpu-demo", NEEDS["gpt4-compression-0.3"])
    assert gpt4.compression.endpoint == "http://localhost:8000/v1" and gpt4.compression.api_model == "gpt-4"


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ValueError, match="allowed"):
        variant_config("promptintern-turbo", "tiny")


def fake_model_folder(path, architecture):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    return str(path)


def test_llmlingua2_unavailable_without_a_token_classifier(tmp_path):
    causal = fake_model_folder(tmp_path / "causal", "LlamaForCausalLM")
    for overrides, says in [(None, "no compression.model is set"),
                            ({"compression": {"model": causal}}, "LlamaForCausalLM"),
                            ({"compression": {"model": str(tmp_path / "missing")}}, "not a model folder")]:
        with pytest.raises(VariantUnavailable, match=rf"'llmlingua2-0.3' is unavailable: .*{says}.*"
                                                     r"token-classification.*llmlingua-2-xlm-roberta-large"):
            variant_config("llmlingua2-0.3", "tiny", overrides)
    classifier = fake_model_folder(tmp_path / "classifier", "XLMRobertaForTokenClassification")
    cfg = variant_config("llmlingua2-0.3", "tiny", {"compression": {"model": classifier}})
    assert cfg.compression.model == classifier


def test_api_compression_unavailable_without_an_endpoint():
    with pytest.raises(VariantUnavailable, match=r"'gpt4-compression-0.3' is unavailable: compression.endpoint "
                                                 r"is not set.*--set compression.endpoint="):
        variant_config("gpt4-compression-0.3", "tiny")
    assert issubclass(VariantUnavailable, ValueError)


def test_the_paper_preset_uses_k_5_2_0_on_mbpp_and_10_5_0_elsewhere():
    from promptintern.config import preset

    def ks(cfg):
        return [s.k for s in cfg.schedule.stages()]

    assert ks(preset("paper")) == [10, 5, 0]
    assert ks(preset("paper", {"dataset": "mbpp"})) == [5, 2, 0]
    assert ks(preset("paper", {"dataset": "mbpp", "schedule": {"k0": 8}})) == [8, 4, 0]  # the user wins
    assert ks(variant_config("promptintern", "paper", {"dataset": "mbpp"})) == [5, 2, 0]
