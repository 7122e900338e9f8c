#!/usr/bin/env python3
"""How many plain-language prompts route right? Scores tests/paraphrases.yaml with one text encoder.

    python tools/route_paraphrases.py [--encoder auto|minilm|hashing|open_clip] [--all] [--file FILE]

A one-intent prompt routes right when its top intent is the expected one; a two-intent prompt when
both expected intents are its top two. Prints the misses (every prompt with --all) and the score.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from streamfuse.text import Router, build_encoder, load_bank

PARAPHRASES = Path(__file__).resolve().parents[1] / "tests" / "paraphrases.yaml"


def routes_right(weights: dict[str, float], intents: list[str]) -> bool:
    """Top intent right (one expected intent), or both expected intents in the top two."""
    ranked = sorted(weights, key=weights.get, reverse=True)
    return set(ranked[: len(intents)]) == set(intents) and all(weights[i] > 0 for i in intents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="auto")
    parser.add_argument("--all", action="store_true", help="print every prompt, not only the misses")
    parser.add_argument("--file", type=Path, default=PARAPHRASES, help="prompts with expected intents (YAML list)")
    args = parser.parse_args()
    cases = yaml.safe_load(args.file.read_text())
    router = Router(build_encoder(args.encoder), load_bank())
    start = time.perf_counter()
    router.route("warm-up")
    right = 0
    for case in cases:
        routing = router.route(case["prompt"])
        ok = routes_right(routing.weights, case["intents"])
        right += ok
        if args.all or not ok:
            print(f"{'ok  ' if ok else 'MISS'} {case['prompt']!r}: expected {'+'.join(case['intents'])}, "
                  f"got {routing.summary()}")
    print(f"{router.encoder.id}: {right}/{len(cases)} route right ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
