import dataclasses
import re

import pytest

from training.config import PRESETS, ConfigError, TrainConfig, apply_overrides, check_batches, get_preset, main, plan_batches, validate


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid(name):
    cfg = get_preset(name)
    validate(cfg)
    assert cfg.preset == name


def test_paper_settings_in_the_wan_presets():
    small, large = get_preset("world-r1-small"), get_preset("world-r1-large")
    assert (small.num_steps, small.timestep_fraction, small.trained_step_count()) == (50, 0.49, 24)
    assert (small.group_size, small.num_batches_per_epoch, small.kl_beta, small.clip_range, small.lr) == (2, 24, 0.004, 1e-3, 1e-4)
    assert (small.lora_rank, small.lora_alpha, small.guidance_scale, small.num_frames) == (32, 64, 5.0, 81)
    assert (small.height, small.width, small.main_steps, small.dynamic_steps) == (480, 832, 100, 50)
    assert large.pipeline == "Wan2.1-T2V-14B" and small.pipeline == "Wan2.1-T2V-1.3B" and large.gradient_checkpointing


def test_every_field_has_help():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name


def test_overrides_parse_types_and_reject_unknown_keys():
    cfg = apply_overrides(get_preset("tinyworld-cpu"), ["lr=2e-4", "group_size=4", "ema=false", "lora_targets=to_q,to_v", "global-std=yes"])
    assert (cfg.lr, cfg.group_size, cfg.ema, cfg.lora_targets, cfg.global_std) == (2e-4, 4, False, ["to_q", "to_v"], True)
    assert get_preset("tinyworld-cpu").lr == 3e-4  # the preset itself is untouched
    with pytest.raises(ConfigError, match="unknown config key 'kl_bta'.*'kl_beta'"):
        apply_overrides(TrainConfig(), ["kl_bta=0.1"])
    with pytest.raises(ConfigError, match="expected a int"):
        apply_overrides(TrainConfig(), ["group_size=2.5"])
    with pytest.raises(ConfigError, match="expected a bool"):
        apply_overrides(TrainConfig(), ["ema=maybe"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(TrainConfig(), ["lr"])
    with pytest.raises(ConfigError, match="unknown preset 'tinyworld'.*'tinyworld-cpu'"):
        get_preset("tinyworld")


def test_validate_catches_impossible_values():
    for bad in (["noise_level=0"], ["timestep_fraction=0.05"], ["reward_norm=zscore"], ["sde_window_size=20", "num_steps=10"]):
        with pytest.raises(ConfigError):
            validate(apply_overrides(TrainConfig(), bad))


def test_batch_calculator():
    small = get_preset("world-r1-small")
    plan = plan_batches(small, 8)
    assert plan.ok and plan.samples_per_round == 8 and plan.prompts_per_epoch == 96 and plan.samples_per_epoch == 192
    assert plan.verdict.startswith("OK") and "24 trained step" in plan.verdict
    bad = plan_batches(small, 3)
    assert not bad.ok and "not divisible by group_size K = 2" in bad.verdict and "per_device_batch_size 2" in bad.verdict
    with pytest.raises(ConfigError, match="NOT OK"):
        check_batches(small, 3)
    cpu = plan_batches(get_preset("tinyworld-cpu"), 1)
    assert cpu.ok and cpu.prompts_per_epoch == 4 and cpu.micro_batches_per_step == 2
    uneven = apply_overrides(get_preset("tinyworld-cpu"), ["steps_per_epoch=3"])
    assert "do not split" in plan_batches(uneven, 1).verdict
    assert "K ≥ 2" in plan_batches(apply_overrides(TrainConfig(), ["group_size=1"]), 1).verdict


def test_config_cli(capsys):
    assert main(["--preset", "world-r1-small", "--gpus", "8"]) == 0
    assert "OK: 8 process(es)" in capsys.readouterr().out
    assert main(["--preset", "world-r1-small", "--gpus", "3"]) == 1
    assert main(["--preset", "world-r1-small", "bogus=1"]) == 2


@pytest.mark.parametrize("override, message", [
    ("max_minutes=-1", "max_minutes must be ≥ 0 minutes (0 = no time limit)"),
    ("max_minutes=nan", "max_minutes='nan': expected a finite number"),
    ("lr=inf", "lr='inf': expected a finite number"),
    ("epochs=1e400", "epochs='1e400': expected a finite number"),
    ("seed=-3", "seed must be ≥ 0"),
    ("num_frames=0", "num_frames must be ≥ 1"),
    ("train_prompts=", "train_prompts is empty"),
    ("pipeline= ", "pipeline is empty"),
    ("lora_targets=", "lora_targets must list module names"),
    ("adam_beta2=1", "adam_beta1 and adam_beta2 must be in"),
    ("max_grad_norm=0", "max_grad_norm must be > 0"),
    ("num_eval_clips=-1", "num_eval_clips and eval_every must be ≥ 0"),
])
def test_every_knob_is_checked_with_a_message_naming_it(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(apply_overrides(get_preset("tinyworld-cpu"), [override]))


def test_a_config_whose_rewards_all_weigh_zero_is_refused():
    zero = ["w_recon=0", "w_meta=0", "w_traj=0", "w_gen=0"]
    with pytest.raises(ConfigError, match="every reward weight is 0"):
        validate(apply_overrides(get_preset("tinyworld-cpu"), zero))
    validate(apply_overrides(get_preset("tinyworld-cpu"), zero[:-1]))  # R_gen alone is a reward
    with pytest.raises(ConfigError, match="finite"):
        validate(dataclasses.replace(get_preset("tinyworld-cpu"), kl_beta=float("nan")))  # set in code, not parsed
