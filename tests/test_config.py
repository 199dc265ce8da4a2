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
    ("run.stepz=3", "unknown config key 'run.stepz'; valid keys in run: steps"),
    ("runn.steps=3", "unknown config key 'runn.steps'; sections: model, data"),
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
