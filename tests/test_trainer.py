"""The trainer: an interrupted run resumes to the same weights; refining trained weights by self-distillation
(frozen parts stay, other intents keep the teacher's output, the refined intent's target blends its own
output with the range-restored balanced fusion)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_data import textured, write

from streamfuse.config import ModelConfig, RefineConfig, TrainConfig, load_train_config
from streamfuse.errors import ConfigError, StreamfuseError
from streamfuse.models.checkpoint import load_model, save_weights
from streamfuse.models.network import FusionNet
from streamfuse.text import load_bank
from streamfuse.train.distill import distillation_targets, restore_thermal_range
from streamfuse.train.trainer import Trainer


@pytest.fixture
def start_weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = FusionNet(load_bank().ids, channels=8, token_dim=16, tokens_per_intent=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return save_weights(model, tmp_path / "start.pt", {"steps": 123})


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for index in range(3):
        write(root / "roadscene" / "ir" / f"{index}.png", textured(index, (80, 96)))
        write(root / "roadscene" / "vi" / f"{index}.png", textured(10 + index, (80, 96)))
    return root


def refine_config(data_root: Path, start: Path, tmp_path: Path, **refine) -> TrainConfig:
    return TrainConfig(data_root=str(data_root), crop=32, batch_size=4, steps=3, threads=1, checkpoint_every=100,
                       log_every=100, intents={"balanced": 1.0, "low_contrast_thermal": 1.0}, mix_with_balanced=0.0,
                       output_dir=str(tmp_path / "out"), export=str(tmp_path / "refined.pt"),
                       init_weights=str(start), refine=RefineConfig(**refine))


def scratch_config(data_root: Path, tmp_path: Path, steps: int) -> TrainConfig:
    return TrainConfig(data_root=str(data_root), crop=32, batch_size=4, steps=steps, threads=1, checkpoint_every=2,
                       log_every=100, output_dir=str(tmp_path / "run"), export=None,
                       model=ModelConfig(channels=8, token_dim=16, tokens_per_intent=2))


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(data_root, tmp_path):
    straight = Trainer(scratch_config(data_root, tmp_path / "a", 4))
    straight.run()
    first = Trainer(scratch_config(data_root, tmp_path / "b", 2))
    first.run()  # stops at step 2 with its checkpoint, as an interrupted run would
    resumed = Trainer(scratch_config(data_root, tmp_path / "b", 4))
    assert resumed.resume() and resumed.step == 2
    resumed.run()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.running_loss == straight.running_loss  # the logged loss restarted its average on --resume


def test_a_run_stopped_by_ctrl_c_mid_step_resumes_to_the_weights_of_an_uninterrupted_one(data_root, tmp_path,
                                                                                         monkeypatch):
    """The checkpoint saved on Ctrl-C held a half-done step (random states advanced past it): resumed runs
    ended 0.025 from an uninterrupted one."""
    import os
    import signal

    straight = Trainer(scratch_config(data_root, tmp_path / "a", 5))
    straight.run()
    stopped = Trainer(scratch_config(data_root, tmp_path / "b", 5))
    draw = stopped.sampler.batch

    def interrupted_in_step_3(*args, **kwargs):
        batch = draw(*args, **kwargs)
        if stopped.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the batch of step 3 was drawn
        return batch

    monkeypatch.setattr(stopped.sampler, "batch", interrupted_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        stopped.run()
    assert stopped.step == 3
    resumed = Trainer(scratch_config(data_root, tmp_path / "b", 5))
    assert resumed.resume() and resumed.step == 3
    resumed.run()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_second_ctrl_c_while_the_checkpoint_is_saved_waits_for_it(data_root, tmp_path, monkeypatch):
    """Ctrl-C twice: the second one interrupted the saving of the checkpoint the first one asked for."""
    import os
    import signal

    stopped = Trainer(scratch_config(data_root, tmp_path, 5))
    draw, save = stopped.sampler.batch, stopped.save_checkpoint

    def interrupted_in_step_3(*args, **kwargs):
        if stopped.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return draw(*args, **kwargs)

    def save_interrupted_again() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # lands before the file is written
        save()

    monkeypatch.setattr(stopped.sampler, "batch", interrupted_in_step_3)
    monkeypatch.setattr(stopped, "save_checkpoint", save_interrupted_again)
    with pytest.raises(KeyboardInterrupt):
        stopped.run()
    resumed = Trainer(scratch_config(data_root, tmp_path, 5))
    assert resumed.resume() and resumed.step == stopped.step
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_step_that_fails_while_a_signal_is_held_ends_with_its_own_error(data_root, tmp_path, monkeypatch):
    """The held Ctrl-C was raised in place of the step's error (a diverged run said 'interrupted')."""
    import os
    import signal

    trainer = Trainer(scratch_config(data_root, tmp_path, 3))

    def diverges(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        raise StreamfuseError("training diverged")

    monkeypatch.setattr(trainer.sampler, "batch", diverges)
    with pytest.raises(StreamfuseError, match="training diverged"):
        trainer.run()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resuming_past_steps_or_with_another_network_size_is_one_clear_error(data_root, tmp_path):
    """A checkpoint past steps was exported as it was (its metadata saying so); another network size gave
    "cannot resume from this checkpoint (Error(s) in loading state_dict for FusionNet:)"."""
    Trainer(scratch_config(data_root, tmp_path, 4)).run()
    with pytest.raises(ConfigError, match=r"^steps: 2, and the checkpoint .*last\.pt is already at step 4"):
        Trainer(scratch_config(data_root, tmp_path, 2)).resume()
    wider = scratch_config(data_root, tmp_path, 6)
    wider.model = ModelConfig(channels=12, token_dim=16, tokens_per_intent=2)
    with pytest.raises(ConfigError, match=r"size mismatch.*resume with the settings it was saved with"):
        Trainer(wider).resume()


def test_restore_thermal_range_stretches_edges_but_not_noise():
    flat = torch.full((1, 1, 24, 24), 0.4)
    assert torch.allclose(restore_thermal_range(flat, 2.0, 3.0, 0.03), flat)
    step = torch.full((1, 1, 32, 64), 0.45)
    step[..., 32:] = 0.55  # a warm region beside a cold one, the mean 0.5
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 0.005, step.shape).astype(np.float32))
    restored = restore_thermal_range(step + noise, 2.0, 3.0, 0.03)
    cold, warm = restored[..., 4:28, 4:28], restored[..., 4:28, 36:60]
    assert abs(float(cold.mean()) - 0.4) < 0.005 and abs(float(warm.mean()) - 0.6) < 0.005  # the edge doubled
    assert float(warm.std()) < float(noise[..., 4:28, 36:60].std())  # the noise not amplified, reduced


def test_targets_keep_the_teacher_except_for_the_refined_intent(start_weights):
    teacher, _ = load_model(start_weights)
    rng = np.random.default_rng(1)
    ir, vis = (torch.from_numpy(rng.random((4, 1, 32, 32), dtype=np.float32)) for _ in range(2))
    intents = ["balanced", "low_contrast_thermal", "glare", "low_contrast_thermal"]
    weights = torch.cat([teacher.intent_weights({intent: 1.0}) for intent in intents])
    refine = RefineConfig(own_share=0.25)
    targets = distillation_targets(teacher, ir, vis, weights, intents, refine)
    with torch.no_grad():
        own = teacher(ir, vis, weights)
        restored_ir = restore_thermal_range(ir, refine.thermal_gain, refine.thermal_sigma, refine.thermal_sigma_range)
        restored = teacher(restored_ir, vis, teacher.intent_weights({"balanced": 1.0}))
    assert torch.equal(targets[[0, 2]], own[[0, 2]])
    assert torch.allclose(targets[[1, 3]], 0.25 * own[[1, 3]] + 0.75 * restored[[1, 3]], atol=1e-6)
    assert not torch.allclose(targets[[1, 3]], own[[1, 3]], atol=1e-3)


def test_refinement_trains_only_the_named_parts_and_records_its_origin(data_root, start_weights, tmp_path):
    trainer = Trainer(refine_config(data_root, start_weights, tmp_path))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    exported = trainer.run()
    refined, metadata = load_model(exported)
    changed = {name for name, p in refined.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith(("tokens", "iti", "low")) for name in changed)
    assert "tokens" in changed
    assert metadata["refined_from"]["metadata"] == {"steps": 123}
    assert metadata["refined_from"]["refine"]["intent"] == "low_contrast_thermal"
    assert metadata["parameters"] == sum(p.numel() for p in refined.parameters())


def test_refinement_settings_are_checked(data_root, start_weights, tmp_path):
    with pytest.raises(ConfigError, match="refine.trainable: no parameter name starts with 'head_'"):
        Trainer(refine_config(data_root, start_weights, tmp_path, trainable=["head_"]))
    with pytest.raises(ConfigError, match="refine.intent: 'fog' is not one of the sampled intents"):
        Trainer(refine_config(data_root, start_weights, tmp_path, intent="fog"))
    with pytest.raises(ConfigError, match="init_weights: no checkpoint at .*missing.pt; train one with"):
        Trainer(refine_config(data_root, tmp_path / "missing.pt", tmp_path))
    path = tmp_path / "refine.yaml"
    path.write_text("refine: {own_share: 1.5}\n")
    with pytest.raises(ConfigError, match="refine.own_share: must be between 0 and 1"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="learning_rate: must be positive, got -1"):
        load_train_config(path, ["refine.own_share=0.5", "learning_rate=-1"])
    with pytest.raises(ConfigError, match="model.channels: must be at least 1, got 0"):
        load_train_config(path, ["refine.own_share=0.5", "model.channels=0"])
    with pytest.raises(ConfigError, match="seed: must be 0 or more, got -1"):  # a traceback from NumPy
        load_train_config(path, ["refine.own_share=0.5", "seed=-1"])
    with pytest.raises(ConfigError, match=f"output_dir: {path} is a file; name a folder"):  # it blamed 'export'
        load_train_config(path, ["refine.own_share=0.5", f"output_dir={path}"])


def test_a_run_without_export_says_how_to_export_and_the_weights_count_every_sessions_time(data_root, tmp_path,
                                                                                          caplog):
    """With export unset a run ended without a word about weights; its checkpoint exported by --resume with an
    export path, whose metadata gave the seconds of the last session only."""
    first = Trainer(scratch_config(data_root, tmp_path, 2))
    caplog.set_level(logging.INFO, logger="streamfuse")
    first.run()
    assert "no weights exported (export is not set)" in caplog.text and "--resume --set export=PATH" in caplog.text
    trained_for = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["seconds"]
    config = scratch_config(data_root, tmp_path, 2)
    config.export = str(tmp_path / "w.pt")
    later = Trainer(config)
    assert later.resume()
    later.run()
    assert trained_for > 0 and load_model(tmp_path / "w.pt")[1]["seconds"] >= round(trained_for, 1)


def test_intents_never_sampled_are_exported_with_the_balanced_tokens(data_root, tmp_path):
    config = scratch_config(data_root, tmp_path, 2)
    config.intents = {"balanced": 1.0, "glare": 1.0, "fog": 0.0}  # weight 0: named, never drawn
    config.export = str(tmp_path / "w.pt")
    Trainer(config).run()
    model, metadata = load_model(tmp_path / "w.pt")
    balanced = model.tokens[model.intents.index("balanced")]
    assert {"mri_ct", "fog"} <= set(metadata["untrained_intents"]) and "glare" not in metadata["untrained_intents"]
    assert torch.equal(model.tokens[model.intents.index("mri_ct")], balanced)
    assert torch.equal(model.tokens[model.intents.index("fog")], balanced)  # kept its random tokens before
    assert not torch.equal(model.tokens[model.intents.index("glare")], balanced)


def test_a_medical_intent_in_the_training_mix_is_one_config_error(data_root, tmp_path):
    """It passed the check against the prompt bank and failed at the first step with a traceback."""
    config = scratch_config(data_root, tmp_path, 2)
    config.intents = {"balanced": 1.0, "mri_ct": 0.01}
    with pytest.raises(ConfigError, match="intents: 'mri_ct' is a medical intent"):
        Trainer(config)
    assert not Path(config.output_dir).exists()


def test_resume_without_a_checkpoint_says_so(data_root, tmp_path, caplog):
    """``streamfuse train --resume`` with nothing to resume from warns that training starts afresh."""
    import yaml

    from streamfuse.cli import main

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data_root": str(data_root), "crop": 32, "batch_size": 4, "steps": 1,
                                      "threads": 1, "output_dir": str(tmp_path / "run"), "export": None,
                                      "model": {"channels": 8, "token_dim": 16, "tokens_per_intent": 2}}))
    caplog.set_level("WARNING")
    assert main(["train", str(config), "--resume", "--no-progress"]) == 0
    assert f"--resume: no {tmp_path / 'run' / 'last.pt'} yet; training starts at step 0" in caplog.text


def test_the_shipped_weights_path_is_refused_outside_a_source_checkout(data_root, tmp_path, monkeypatch):
    """The packaged refine config exports to ``streamfuse/models/weights/...``; run in another folder, that
    made a ``streamfuse`` folder there, which hid the installed package from Python."""
    monkeypatch.chdir(tmp_path)
    config = scratch_config(data_root, tmp_path, 1)
    config.export = "streamfuse/models/weights/fusionnet.pt"
    with pytest.raises(ConfigError, match=r"^export: streamfuse/models/weights/fusionnet.pt is where the shipped"):
        Trainer(config)
    assert not (tmp_path / "streamfuse").exists()
    config.export = "weights/fusionnet.pt"  # anything else is written as given
    Trainer(config).run()
    assert (tmp_path / "weights" / "fusionnet.pt").is_file()


def test_a_diverged_run_stops_with_an_error_and_exports_nothing(data_root, tmp_path, monkeypatch):
    """loss=nan went on to the end and exported NaN weights (which then fused every image black)."""
    import streamfuse.train.trainer as trainer_module

    config = scratch_config(data_root, tmp_path, 5)
    config.export = str(tmp_path / "w.pt")
    monkeypatch.setattr(trainer_module, "fusion_loss",
                        lambda fused, *_args: ((fused * float("nan")).mean(), {}))
    with pytest.raises(StreamfuseError, match=r"training diverged at step 1: the loss is nan; nothing was exported "
                                              "and no checkpoint was written yet"):  # it spoke of one from before
        Trainer(config).run()
    assert not (tmp_path / "w.pt").exists()


def test_weights_holding_nan_are_refused_by_name(tmp_path):
    model = FusionNet(load_bank().ids, channels=8, token_dim=16, tokens_per_intent=2)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    path = save_weights(model, tmp_path / "nan.pt")
    with pytest.raises(ConfigError, match=r"nan.pt holds NaN or infinite weights \(a training run that diverged\)"):
        load_model(path)


def test_refining_some_intents_keeps_the_tokens_the_others_were_trained_to(data_root, start_weights, tmp_path):
    """A refine run sampling two intents reset every other intent's trained tokens to balanced (the fog prompt
    then did nothing)."""
    start, _ = load_model(start_weights)
    exported = Trainer(refine_config(data_root, start_weights, tmp_path)).run()
    refined, metadata = load_model(exported)
    fog = refined.intents.index("fog")
    assert torch.equal(refined.tokens[fog], start.tokens[fog]) and metadata["untrained_intents"] == []


def test_an_export_path_that_cannot_be_written_is_refused_before_training(data_root, tmp_path):
    config = scratch_config(data_root, tmp_path, 1)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for export, message in ((tmp_path, "is a folder; give the weights file"),
                            (data_root / "roadscene" / "vi" / "w.pt", "lies in the training data"),
                            (a_file / "w.pt", "cannot write"),
                            (Path(config.output_dir) / "last.pt", "is the run's checkpoint")):
        config.export = str(export)
        with pytest.raises(ConfigError, match=rf"^export: ({export} .*{message}|{message} {export} )"):
            Trainer(config)


def test_an_output_dir_that_cannot_be_written_or_data_without_a_pair_is_refused_before_training(data_root,
                                                                                                tmp_path):
    """Both trained every step first, then ended in a FileExistsError or PermissionError traceback (nothing
    saved); data with no usable pair ended in a ValueError traceback."""
    config = scratch_config(data_root, tmp_path, 1)
    config.crop = 104  # the images are 96x80: a step asked for gigabytes at crop=4000
    with pytest.raises(ConfigError, match=r"^crop: 104 px is larger than every training image \(the largest is 96"):
        Trainer(config)
    config.crop = 32
    config.output_dir = str(data_root / "roadscene" / "ir" / "0.png")
    with pytest.raises(ConfigError, match=r"^output_dir: .*0\.png is a file; give a folder"):
        Trainer(config)
    config.output_dir = str(tmp_path / "run")
    for name in ("ir", "vi"):  # no common names, and one image more on one side
        for index, path in enumerate(sorted((data_root / "roadscene" / name).iterdir())):
            path.rename(path.with_name(f"{name}_{index}.png"))
    write(data_root / "roadscene" / "vi" / "extra.png", textured(7, (80, 96)))
    with pytest.raises(ConfigError, match=r"^data_root: .*: no usable IR-VIS pair"):
        Trainer(config)


def test_the_packaged_configs_export_follows_output_dir(data_root, tmp_path):
    """It was out/train/fusionnet.pt whatever output_dir said: a second run replaced the first one's weights."""
    config = load_train_config("train", [f"data_root={data_root}", f"output_dir={tmp_path / 'run1'}", "crop=32"])
    assert Trainer(config).export == str(tmp_path / "run1" / "fusionnet.pt")


def test_a_missing_relative_data_root_names_the_folder_it_is_relative_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data_root="no/such/data", output_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=rf"^data_root: no/such/data is not a folder \(relative to the working "
                                          rf"directory {tmp_path}\)"):
        Trainer(config)


def test_pairs_by_position_whose_numbers_differ_are_warned_about(data_root, tmp_path, caplog):
    """thermal_1 .. 5 beside visible_5 .. 1 trained on wrong pairs without a word."""
    for name, numbers in (("ir", (1, 2, 3)), ("vi", (1, 5, 6))):
        for number, path in zip(numbers, sorted((data_root / "roadscene" / name).iterdir()), strict=True):
            path.rename(path.with_name(f"{name}_{number}.png"))
    with caplog.at_level(logging.WARNING, logger="streamfuse"):
        Trainer(scratch_config(data_root, tmp_path, 1))
    assert "paired by sorted position, and the numbers in 2 pair(s) differ (e.g. ir_2.png with vi_5.png)" in \
        caplog.text


def test_train_refuses_to_replace_a_checkpoint_and_saves_one_on_sigterm(data_root, tmp_path, capsys, monkeypatch):
    """Without --resume an earlier run's last.pt was overwritten; SIGTERM (or SIGHUP) saved nothing."""
    import os
    import signal

    import yaml

    from streamfuse.cli import main

    step = Trainer.train_step

    def terminated_at_step_5(self):  # SIGTERM while training (not before the handler is in place)
        values = step(self)
        if self.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return values

    monkeypatch.setattr(Trainer, "train_step", terminated_at_step_5)

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data_root": str(data_root), "crop": 32, "batch_size": 4, "steps": 100000,
                                      "threads": 1, "output_dir": str(tmp_path / "run"), "export": None,
                                      "checkpoint_every": 100000, "log_every": 100000,
                                      "model": {"channels": 8, "token_dim": 16, "tokens_per_intent": 2}}))
    assert main(["train", str(config), "--no-progress"]) == 143
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"]
    assert saved >= 5
    capsys.readouterr()
    assert main(["train", str(config), "--no-progress"]) == 1
    assert "holds an earlier run's checkpoint, which this run would replace; continue it with --resume" in \
        capsys.readouterr().err
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == saved
