import pytest

from reasoner.config import Config, ConfigError, load_config, save_config


def test_defaults_are_the_embedded_run():
    cfg = load_config()
    assert cfg.model.name == "tiny" and cfg.data.train == "synthetic"
    assert cfg.algo.advantage == "grpo" and cfg.algo.kl_estimator == "k3" and cfg.algo.beta == 0.04


def test_dotted_overrides_are_typed():
    cfg = load_config(None, ["run.steps=7", "optim.lr=3e-4", "algo.beta=0", "run.progress=false",
                             "data.field_map={problem: question}", "model.gguf_file=none"])
    assert cfg.run.steps == 7 and isinstance(cfg.run.steps, int)
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.algo.beta == 0.0 and cfg.run.progress is False
    assert cfg.data.field_map == {"problem": "question"} and cfg.model.gguf_file is None


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("run:\n  steps: 3\n  batch_size: 4\nsampling:\n  group_size: 4\n")
    cfg = load_config(p, ["run.steps=5"])
    assert (cfg.run.steps, cfg.run.batch_size, cfg.sampling.group_size) == (5, 4, 4)


@pytest.mark.parametrize("override, fragment", [
    ("run.stepz=3", "unknown config key 'run.stepz'; did you mean run.steps? (valid keys in run: steps, batch_size"),
    ("runn.steps=3", "unknown config key 'runn.steps'; did you mean run.steps? (sections: model, data"),
    ("algo.advantage=ppo", "algo.advantage='ppo' is not valid; choose one of: batch_mean, dr_grpo, grpo"),
    ("algo.loss_agg=sum", "choose one of: seq_mean_token_mean, seq_mean_token_sum_norm, token_mean"),
    ("algo.kl_estimator=k4", "choose one of: k1, k2, k3"),
    ("algo.preset=ppo2", "unknown preset 'ppo2'; valid choices: cispo, dapo, dr_grpo, grpo, gspo, justrl, rloo"),
    ("run.steps=many", "run.steps: expected int, got 'many'"),
    ("sampling.group_size=0", "sampling.group_size=0 must be >= 1"),
    ("sampling.top_p=1.5", "sampling.top_p=1.5 must be in (0, 1]"),
    ("algo.minibatches=3", "must divide run.batch_size*sampling.group_size=64"),
    ("run.steps", "must look like key.sub=value"),
])
def test_bad_config_names_the_key_and_choices(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)


def test_preset_sets_fields_and_user_values_win():
    cfg = load_config(None, ["algo.preset=dapo", "algo.eps_high=0.3"])
    assert cfg.algo.loss_agg == "token_mean" and cfg.algo.dynamic_sampling and cfg.algo.beta == 0.0
    assert cfg.algo.eps_high == 0.3  # explicit value beats the preset's 0.28


def test_saved_config_loads_back(tmp_path):
    cfg = load_config(None, ["run.steps=11", "algo.preset=rloo"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and isinstance(again, Config)


@pytest.mark.parametrize("override, fragment", [
    ("algo.betaa=0.1", "unknown config key 'algo.betaa'; did you mean algo.beta? (valid keys in algo: preset,"),
    ("algoo.beta=0.1", "unknown config key 'algoo.beta'; did you mean algo.beta? (sections: model, data,"),
    ("algo.lr=0.1", "unknown config key 'algo.lr'; did you mean optim.lr?"),  # the same name in another section
    ("steps=3", "unknown config key 'steps'; did you mean run.steps?"),
    ("eval.topp=0.9", "unknown config key 'eval.topp'; did you mean eval.top_p?"),
])
def test_a_typo_gets_did_you_mean(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)


def test_a_typo_in_a_file_names_the_file(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("run:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=f"^{p}: unknown config key 'run.stepz'; did you mean run.steps"):
        load_config(p)


@pytest.mark.parametrize("override, message", [
    ("run.batch_size=two", "run.batch_size: expected int, got 'two'"),
    ("run.progress=maybe", "run.progress: expected bool, got 'maybe'"),
    ("algo.beta=[1]", "algo.beta: expected float, got [1]"),
    ("algo.reward_weights={length: x}", "algo.reward_weights.length: expected float, got 'x'"),
    ("data.field_map={problem: [1", "data.field_map: cannot parse '{problem: [1'"),
    ("optim.betas=0.9,0.99", "optim.betas: expected tuple[float, float], got '0.9,0.99'"),
    ("eval.n=four", "eval.n: expected int, got 'four'"),
])
def test_a_type_error_names_the_key_and_the_value(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(message)


def test_the_command_line_forms():
    cfg = load_config(None, ["sampling.stop=</a>,Q:", "optim.betas=[0.8, 0.9]",
                             "data.instruction=Answer: #1 {x}", "algo.preset=None", "model.cache_dir=null"])
    assert cfg.sampling.stop == ["</a>", "Q:"]  # a list: split at the commas
    assert cfg.optim.betas == (0.8, 0.9)  # a tuple again, as the dataclass default
    assert cfg.data.instruction == "Answer: #1 {x}"  # a string field takes the text as given, not as YAML
    assert cfg.algo.preset is None and cfg.model.cache_dir is None
    assert load_config(None, ['sampling.stop=["a,b", "c"]']).sampling.stop == ["a,b", "c"]  # or JSON / YAML
    assert load_config(None, ["run.report_to="]).run.report_to == []


def test_a_dict_or_list_value_is_replaced_not_merged(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("data:\n  field_map: {problem: q}\nsampling:\n  stop: [a, b]\n")
    cfg = load_config(p, ["data.field_map={answer: a}", "sampling.stop=c"])
    assert cfg.data.field_map == {"answer": "a"} and cfg.sampling.stop == ["c"]


def test_eval_section_from_a_file_and_overrides(tmp_path):
    p = tmp_path / "eval.yaml"
    p.write_text("eval:\n  n: 4\n  suite: gsm8k\n  greedy: false\n")
    cfg = load_config(p, ["eval.temperature=1.0"], base={"eval.n": 32, "eval.seeds": 3})  # base: a script's
    assert (cfg.eval.n, cfg.eval.suite, cfg.eval.greedy, cfg.eval.temperature, cfg.eval.seeds) == \
        (4, "gsm8k", False, 1.0, 3)  # the file beats the base, the override beats the file
    with pytest.raises(ConfigError, match=r"eval\.backend='vlm' is not valid; choose one of: transformers, vllm"):
        load_config(None, ["eval.backend=vlm"])
