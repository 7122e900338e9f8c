from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import make_pair
from streamfuse.config import FusionConfig
from streamfuse.errors import ConfigError
from streamfuse.fusers import build_fuser, fuse_luminance
from streamfuse.fusers.model import ModelFuser
from streamfuse.models import bands
from streamfuse.models.checkpoint import default_weights_path, load_model, save_weights
from streamfuse.models.cpu import fuse_on_cpu
from streamfuse.models.network import (
    DETAIL_MAPS,
    MAPS,
    RESIDUAL_BOUND,
    BandFeatures,
    FusionNet,
    band_features,
    parameter_count,
    trunk_factor,
)
from streamfuse.text import HashingTextEncoder, Router, load_bank
from streamfuse.train.losses import loss_terms, salient_mix, sobel_magnitude, ssim_pair

INTENTS = load_bank().ids


@pytest.fixture(scope="module")
def net() -> FusionNet:
    return perturbed_network()


def perturbed_network(trunk_scale: int = 8) -> FusionNet:
    """A network with a non-trivial head, so that outputs depend on inputs and text."""
    torch.manual_seed(0)
    model = FusionNet(INTENTS, trunk_scale=trunk_scale).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def random_features() -> BandFeatures:
    """The network's inputs for a random 64x80 pair (the rule logits of the balanced prompt)."""
    ir, vis = torch.rand(1, 1, 64, 80), torch.rand(1, 1, 64, 80)
    split = bands.decompose(torch.cat([ir, vis], dim=1))
    return band_features(split, bands.rule_logits(split))


def test_untrained_network_is_the_fixed_rule_of_the_classical_fuser():
    model = FusionNet(INTENTS).eval()
    ir, vis = make_pair(4, (96, 64))
    luma = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)
    with torch.no_grad():  # head initialised to zero: the rule's logits, unit gains
        fused = model(torch.from_numpy(ir).float()[None, None] / 255, torch.from_numpy(luma).float()[None, None] / 255,
                      model.intent_weights({"balanced": 1}))
    network = (fused[0, 0] * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy().astype(int)
    difference = np.abs(network - fuse_luminance(ir, luma).astype(int))
    assert difference.mean() < 0.05 and np.percentile(difference, 99.9) <= 1, difference.max()


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (8, 8), (121, 9)])
def test_any_size_in_range(net, size):
    ir, vis = torch.rand(2, 1, *size), torch.rand(2, 1, *size)
    with torch.no_grad():
        fused = net(ir, vis, net.intent_weights({"balanced": 1}))
    assert fused.shape == (2, 1, *size) and fused.min() >= 0 and fused.max() <= 1


def test_text_conditioning_changes_the_output_and_mixes_linearly(net):
    ir, vis = torch.rand(1, 1, 64, 80), torch.rand(1, 1, 64, 80)
    with torch.no_grad():
        a = net(ir, vis, net.intent_weights({"balanced": 1}))
        b = net(ir, vis, net.intent_weights({"thermal_targets": 1}))
        same = net(ir, vis, net.intent_weights({"thermal_targets": 2}))
    assert (a - b).abs().mean() > 1e-4
    assert torch.equal(b, same)  # weights are normalised
    assert torch.equal(net.intent_weights({}), net.intent_weights({"balanced": 1}))


@pytest.mark.parametrize("channel", [bands.COARSE_BANDS - 1, MAPS - 1], ids=["base injection", "finest-band gain"])
def test_only_a_prompt_beyond_balanced_moves_the_base_and_the_finest_band_gain(net, channel):
    """Balanced fusion keeps the rule's base injection and the finest detail whole; a noise prompt may move
    them, in proportion to its share."""
    features = random_features()
    rule = features.rule
    rule_map = torch.cat([rule, torch.zeros_like(rule[:, :2])], dim=1)[:, channel]

    def residual(weights):
        with torch.no_grad():
            return net.decide(features, net.intent_weights(weights))[:, channel] - rule_map

    assert torch.equal(residual({"balanced": 1}), torch.zeros(1, 16, 20))
    noise = residual({"noise": 1})
    assert noise.abs().mean() > 1e-3  # the fixture's random head predicts some residual
    half = residual({"noise": 1, "balanced": 1})
    assert not torch.allclose(half, noise) and half.abs().mean() > 1e-4


def test_balanced_fusion_moves_detail_injection_within_the_frame_but_not_on_average(net):
    """Only the base and the finest band follow the rule under the balanced prompt: the detail bands' residual
    stays, centred on the frame; a prompt beyond balanced may shift it on average, in proportion to its share."""
    features = random_features()
    rule = features.rule

    def frame_mean(weights):
        with torch.no_grad():
            moved = net.decide(features, net.intent_weights(weights))[:, :DETAIL_MAPS] - rule[:, :DETAIL_MAPS]
        return moved, moved.mean(dim=(2, 3))

    balanced, balanced_mean = frame_mean({"balanced": 1})
    assert balanced.abs().mean() > 1e-3 and balanced_mean.abs().max() < 1e-5
    _, noise_mean = frame_mean({"noise": 1})
    _, half_mean = frame_mean({"noise": 1, "balanced": 1})
    assert noise_mean.abs().max() > 1e-3  # the fixture's random head shifts the whole frame
    assert not torch.allclose(half_mean, noise_mean) and half_mean.abs().max() > 1e-4


def test_the_learned_residual_moves_an_injection_logit_by_at_most_the_bound():
    """However wild the head, every prompt's injection logits stay within RESIDUAL_BOUND of the rule's."""
    model = perturbed_network()
    with torch.no_grad():
        model.head.bias[:bands.COARSE_BANDS] = torch.tensor([200.0, -150.0, 90.0])
    features = random_features()
    rule = features.rule
    moved = {}
    for prompt in ("balanced", "noise", "fog"):
        with torch.no_grad():
            moved[prompt] = model.decide(features, model.intent_weights({prompt: 1}))[:, :bands.COARSE_BANDS] - rule
        assert moved[prompt].abs().max() <= RESIDUAL_BOUND + 1e-4, prompt
    assert moved["noise"][:, 0].min() > 0.9 * RESIDUAL_BOUND  # the bound is reached, not a zeroed residual


@pytest.mark.parametrize("prompt", ["glare", "fog", "low_light"])
def test_a_damage_prompt_is_balanced_fusion_where_there_is_no_damage(net, prompt):
    """Nothing saturated, dark or hazy: every map, the finest-band gain included, is the balanced prompt's."""
    torch.manual_seed(2)
    quarter = torch.cat([torch.full((1, 1, 32, 40), 0.3), 0.5 + 0.05 * torch.rand(1, 1, 32, 40)], dim=1)
    features = BandFeatures(quarter=quarter, detail=torch.rand(1, 2, 32, 40) * 0.05, rule=torch.randn(1, 3, 32, 40))
    with torch.no_grad():
        balanced = net.decide(features, net.intent_weights({"balanced": 1}))
        prompted = net.decide(features, net.intent_weights({prompt: 1}))
    assert torch.allclose(prompted, balanced, atol=1e-5)


def test_on_a_cpu_frames_without_the_damage_skip_the_prompts_pass_and_fuse_the_same(net, monkeypatch):
    """A glare prompt on frames with nothing near clipping: one text-conditioned pass (balanced fusion's)
    instead of two, and the same maps as with both passes (to float rounding)."""
    quarter = torch.cat([torch.full((2, 1, 32, 40), 0.3), 0.5 + 0.05 * torch.rand(2, 1, 32, 40)], dim=1)
    features = BandFeatures(quarter=quarter, detail=torch.rand(2, 2, 32, 40) * 0.05, rule=torch.randn(2, 3, 32, 40))
    weights = net.intent_weights({"glare": 0.8, "balanced": 0.2})
    passes = []
    text_residual = FusionNet._text_residual
    monkeypatch.setattr(FusionNet, "_text_residual", lambda self, skip, w: passes.append(len(skip)) or
                        text_residual(self, skip, w))
    with torch.no_grad():
        skipped = net.decide(features, weights)
        monkeypatch.setattr(FusionNet, "_prompt_acts", staticmethod(lambda gate: True))
        both = net.decide(features, weights)
    assert passes == [2, 4]  # the batch of two, then the prompt's rows and balanced fusion's
    # The same arithmetic on a batch of 2 and of 4: some CPUs' kernels round the two differently (2.4e-7 seen).
    assert torch.allclose(skipped, both, rtol=0, atol=1e-6)


@pytest.mark.parametrize("prompt", ["balanced", "glare"])
def test_the_trunk_sees_a_large_frame_at_the_training_scale(prompt):
    """A frame twice the training scale is pooled back to it: its learned residual is the smaller frame's, upsampled.

    Exact for a trunk at 1/4 (one bilinear 2x step either way); at 1/8 the same pooling runs, but a 4x
    upsampling is not two 2x ones.
    """
    net = perturbed_network(trunk_scale=4)
    assert [trunk_factor(*size, trunk_scale=4) for size in [(480, 640), (256, 900), (1024, 1280), (1080, 1920)]] \
        == [1, 1, 2, 3]
    assert [trunk_factor(*size, trunk_scale=8) for size in [(128, 128), (480, 640), (1024, 1280)]] == [2, 2, 4]
    torch.manual_seed(1)
    small = BandFeatures(quarter=torch.rand(1, 2, 120, 160), detail=torch.rand(1, 2, 120, 160) * 0.1,
                         rule=torch.randn(1, 3, 120, 160) * 4)
    large = BandFeatures(*(F.interpolate(x, scale_factor=2, mode="nearest") for x in small))
    weights = net.intent_weights({prompt: 1})
    with torch.no_grad():
        residual_small = net.decide(small, weights) - F.pad(small.rule, (0, 0, 0, 0, 0, 2))
        residual_large = net.decide(large, weights) - F.pad(large.rule, (0, 0, 0, 0, 0, 2))
    expected = F.interpolate(residual_small, scale_factor=2, mode="bilinear", align_corners=False)
    if prompt == "balanced":
        assert torch.allclose(residual_large, expected, atol=1e-4)
    else:  # the damage gate is computed at the large frame's own 1/4 scale, so only most of it agrees
        assert (residual_large - expected).abs().mean() < 0.1 * residual_small.abs().mean()


def test_parameter_count_is_small(net):
    assert 10_000 < parameter_count(net) < 200_000


def test_checkpoint_round_trip_and_errors(net, tmp_path):
    path = save_weights(net, tmp_path / "w.pt", {"steps": 3})
    loaded, metadata = load_model(path)
    assert metadata == {"steps": 3} and loaded.intents == INTENTS
    ir, vis = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        fog = net.intent_weights({"fog": 1})
        assert torch.equal(loaded(ir, vis, fog), net(ir, vis, fog))
    with pytest.raises(ConfigError, match="no checkpoint at .*missing.pt"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(ConfigError, match="corrupt.pt is not a readable streamfuse checkpoint"):
        load_model(tmp_path / "corrupt.pt")
    (tmp_path / "empty.pt").write_bytes(b"")  # an exception without a message
    (tmp_path / "text.pt").write_text("hello, not a checkpoint\n")  # KeyError inside torch's unpickler
    for name in ("empty.pt", "text.pt"):
        with pytest.raises(ConfigError, match=f"{name} is not a readable streamfuse checkpoint"):
            load_model(tmp_path / name)
    torch.save({"architecture": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="holds 'something-else'"):
        load_model(tmp_path / "other.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["channels"] = 8
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ConfigError, match="mismatch.pt does not match the network"):
        load_model(tmp_path / "mismatch.pt")


def test_checkpoint_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"architecture": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match="not a readable streamfuse checkpoint"):
        load_model(tmp_path / "evil.pt")


def test_shipped_weights_load_and_fuse():
    assert default_weights_path().is_file()
    fuser = build_fuser(FusionConfig(fuser="model"))
    assert isinstance(fuser, ModelFuser)
    ir, vis = make_pair(2, (96, 72))
    fused = fuser.fuse(ir, vis)
    assert fused.shape == vis.shape and fused.dtype == np.uint8
    fuser.condition(Router(HashingTextEncoder(), load_bank()).route("highlight people and vehicles"))
    assert not np.array_equal(fuser.fuse(ir, vis), fused)


def test_model_fuser_batch_matches_single_and_masks(tmp_path, net):
    fuser = ModelFuser(save_weights(net, tmp_path / "w.pt"))
    pairs = [make_pair(i) for i in range(3)]
    batch = fuser.fuse_batch([p[0] for p in pairs], [p[1] for p in pairs])
    for (ir, vis), out in zip(pairs, batch, strict=True):
        assert np.abs(out.astype(int) - fuser.fuse(ir, vis).astype(int)).max() <= 1
    ir, vis = pairs[0]
    valid = np.ones(ir.shape, np.uint8)
    valid[:, :20] = 0
    masked = fuser.fuse(ir, vis, valid)
    luma = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[:, :, 0]
    masked_luma = cv2.cvtColor(masked, cv2.COLOR_BGR2YCrCb)[:, :, 0]
    assert np.abs(masked_luma[:, :20].astype(int) - luma[:, :20].astype(int)).max() <= 2


def test_loss_terms_by_hand():
    flat = torch.full((1, 1, 16, 16), 0.5)
    assert float(sobel_magnitude(flat).max()) < 1e-3  # no edges in a constant image
    ramp = torch.arange(16.0).repeat(16, 1)[None, None] / 16  # +1/16 per pixel in x
    # Sobel with the /8 normalisation gives the derivative: 1/16 inside the image
    assert torch.allclose(sobel_magnitude(ramp)[..., 1:-1, 1:-1], torch.full((1, 1, 14, 14), 1 / 16), atol=1e-4)
    image = torch.rand(2, 1, 32, 32)
    s_ir, s_vis = ssim_pair(image, image, 1 - image)
    assert torch.allclose(s_ir, torch.ones(2), atol=1e-5) and (s_vis < 0).all()  # inverted image: negative SSIM
    terms = loss_terms(image, image, image)
    for name in ("intensity", "gradient", "gradient_vis", "gradient_ir", "ssim", "ssim_vis"):
        assert float(terms[name].max()) < 1e-3, name  # fusing an image with itself costs nothing
    darker = loss_terms(image * 0.5, image, image)
    assert torch.allclose(darker["intensity"], (image * 0.5).mean(dim=(1, 2, 3)), atol=1e-6)


def test_intensity_target_follows_the_salient_source_not_the_brighter_one():
    """A hot object on a flat infrared background, a textured visible image that is brighter everywhere:
    the target keeps the object from the infrared and the texture (not the infrared's flat level)
    elsewhere; a per-pixel maximum would have lost the object's contrast against the bright visible."""
    ir = torch.full((1, 1, 96, 96), 0.2)
    ir[..., 40:56, 40:56] = 0.7
    stripes = (torch.arange(96.0) // 4 % 2).repeat(96, 1)[None, None]
    vis = 0.6 + 0.3 * stripes
    target = salient_mix(ir, vis)
    assert float((target[..., 44:52, 44:52] - 0.7).abs().max()) < 0.1  # the object keeps its infrared level
    assert torch.allclose(target[..., :12, :12], vis[..., :12, :12], atol=0.05)  # far from it: the visible
    same = torch.rand(2, 1, 48, 48)
    assert torch.allclose(salient_mix(same, same), same, atol=1e-6)


@pytest.mark.parametrize("prompt", [{"balanced": 1}, {"glare": 0.5, "noise": 0.5}, {"mri_ct": 0.5, "balanced": 0.5}])
@pytest.mark.parametrize("trunk_scale", [4, 8])
def test_opencv_cpu_path_matches_the_torch_forward(prompt, trunk_scale):
    net = perturbed_network(trunk_scale)
    pairs = [make_pair(i, (90, 70)) for i in range(2)]
    irs = [ir for ir, _ in pairs]
    lumas = [cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY) for _, vis in pairs]
    weights = net.intent_weights(prompt)
    memory = torch.full((2, *net.memory_shape(70, 90)), float("nan"))
    fused, new_memory = fuse_on_cpu(net, irs, lumas, weights, memory, 0.5)
    ir = torch.from_numpy(np.stack(irs)).float()[:, None] / 255
    vis = torch.from_numpy(np.stack(lumas)).float()[:, None] / 255
    with torch.no_grad():
        expected, expected_memory = net(ir, vis, weights, memory, 0.5)
    expected = (expected[:, 0] * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy().astype(int)
    difference = np.abs(np.stack(fused).astype(int) - expected)
    assert difference.mean() < 0.05 and np.percentile(difference, 99.9) <= 1, difference.max()
    assert torch.allclose(new_memory, expected_memory, atol=1e-3)


def test_a_training_runs_resume_state_given_as_weights_says_what_it_is(tmp_path):
    """It said "holds None, not a streamfuse-fusionnet-v5 checkpoint"."""
    state = tmp_path / "last.pt"
    torch.save({"step": 3, "model": {}, "optimizer": {"state": {}}}, state)  # the keys Trainer.save_checkpoint writes
    with pytest.raises(ConfigError, match=r"last.pt is a training run's resume state, not fusion weights; use"):
        load_model(state)


def test_a_bare_state_dict_and_a_mismatched_one_say_what_they_are(tmp_path):
    """A bare state_dict said "holds None"; a mismatch named no key (only "Error(s) in loading state_dict")."""
    model = FusionNet(load_bank().ids)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ConfigError, match=r"bare.pt holds a dictionary without an architecture \(keys tokens, "):
        load_model(tmp_path / "bare.pt")
    payload = torch.load(default_weights_path(), weights_only=True)
    del payload["state_dict"]["head.weight"]
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ConfigError, match=r"does not match the network .*Missing key\(s\) in state_dict: \"head.wei"):
        load_model(tmp_path / "mismatch.pt")


@pytest.mark.parametrize("fuser", ["model", "classical"])
def test_an_intent_the_fusers_do_not_know_counts_as_balanced_with_a_warning(fuser, caplog):
    """A bank of the user's own may add intents: 'find the boats' was routed and reported as boats 1.00, then
    fused as balanced without a word (and by the model 'boats 0.71, visible_detail 0.29' as visible_detail
    alone, the unknown share dropped and the rest renormalised)."""
    from streamfuse.text import Routing

    weights = {"boats": 0.71, "visible_detail": 0.29, "balanced": 0.0}
    known = {"visible_detail": 0.29, "balanced": 0.71}
    built = build_fuser(FusionConfig(fuser=fuser, device="cpu"))
    with caplog.at_level("WARNING"):
        built.condition(Routing("find the boats, keep the colours", "test", weights, {}, {}, False))
    assert "intent 'boats' (0.71 of the prompt) means nothing to the " + fuser in caplog.text
    assert "an intent added to the bank needs a fuser trained for it" in caplog.text
    if fuser == "classical":  # a built-in intent it has no rule for was called "a new intent" too
        from streamfuse.fusers import base

        base._WARNED_INTENTS.discard(("classical", "noise"))  # warned once per process: maybe by an earlier test
        with caplog.at_level("WARNING"):
            built.condition(Routing("reduce noise", "test", {"noise": 1.0, "balanced": 0.0}, {}, {}, False))
        assert "intent 'noise' (1.00 of the prompt) means nothing to the classical fuser" in caplog.text
        assert "(the model fuser has it)" in caplog.text
        built.condition(Routing("the same, in known intents", "test", known, {}, {}, False))
    ir, vis = make_pair(3, (96, 64))
    prompted = built.fuse(ir, vis)
    built.condition(Routing("the same, in known intents", "test", known, {}, {}, False))
    assert np.array_equal(prompted, built.fuse(ir, vis))
    if fuser == "model":
        assert torch.equal(built.network.intent_weights(weights), built.network.intent_weights(known))


def test_both_stems_in_one_grouped_pass_equal_each_stem_on_its_own():
    """The stems run as grouped operations (half as many small operations, about 1.5 of 30 ms per 640x512
    frame on 2 cores): the result, and the gradients that train each stem, must be each block's own."""
    from streamfuse.models.layers import DAFE, paired_dafe

    torch.manual_seed(0)
    first, second = DAFE(16), DAFE(16)
    x = torch.randn(2, 32, 12, 10, requires_grad=True)
    paired = paired_dafe(x, first, second)
    separate = torch.cat([first(x[:, :16]), second(x[:, 16:])], dim=1)
    assert torch.allclose(paired, separate, atol=1e-6)
    gradients = torch.autograd.grad(paired.square().sum(), [first.conv1.weight, second.spatial.conv.weight])
    expected = torch.autograd.grad(separate.square().sum(), [first.conv1.weight, second.spatial.conv.weight])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(gradients, expected, strict=True))
