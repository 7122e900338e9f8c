"""``streamfuse train``: reproducible, resumable training of the fusion network on CPU (or GPU)."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from streamfuse.config import TrainConfig
from streamfuse.errors import ConfigError, StreamfuseError
from streamfuse.models.bands import rule_fusion
from streamfuse.models.checkpoint import load_model, save_weights
from streamfuse.models.network import FusionNet, parameter_count
from streamfuse.models.rule import MEDICAL_INTENTS
from streamfuse.text.prompts import load_bank
from streamfuse.train.data import CropSampler, find_pair_folders, load_training_pairs
from streamfuse.train.distill import distillation_targets
from streamfuse.train.losses import emphasis_matrix, fusion_loss

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"


def _check_export(export: str | None, data_root: str, output_dir: str) -> None:
    """Refuse, before any training, an export path that cannot be written (a folder, a place without write
    access), that lies in the training data, that is the run's checkpoint (the export replaced it, and the
    resume after that failed), or that would create a ``streamfuse`` folder here: the
    packaged refine config writes ``streamfuse/models/weights/fusionnet.pt``, the shipped weights' place in
    a source checkout; run anywhere else, that folder would hide the installed package from Python."""
    if export is None:
        return
    path = Path(export)
    if not path.is_absolute() and path.parts[0] == "streamfuse" and not Path("streamfuse", "__init__.py").is_file():
        raise ConfigError(f"export: {export} is where the shipped weights live in a streamfuse source checkout, "
                          f"and {Path.cwd()} is not one (a streamfuse folder made here would hide the installed "
                          "package); run from the repository root, or --set export=PATH")
    if path.is_dir():
        raise ConfigError(f"export: {export} is a folder; give the weights file, e.g. {path / 'fusionnet.pt'}")
    if path.resolve() == (Path(output_dir) / CHECKPOINT).resolve():
        raise ConfigError(f"export: {export} is the run's checkpoint (output_dir/{CHECKPOINT}), which training writes "
                          f"and --resume reads; export elsewhere, e.g. {Path(output_dir) / 'fusionnet.pt'}")
    if Path(data_root).resolve() in path.resolve().parents:
        raise ConfigError(f"export: {export} lies in the training data (data_root {data_root}); export elsewhere")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the export's folders are made at the end
        folder = folder.parent
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise ConfigError(f"export: cannot write {export} ({exc.strerror} in {folder}); choose a place you may "
                          "write to") from None


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP are held, then raised again for the handlers there were
    (Ctrl-C's KeyboardInterrupt, the command's checkpoint-saving stop): a signal in the middle of a training
    step stopped it half done (random states advanced, possibly the optimiser), and the checkpoint saved on it
    did not resume to the weights of an uninterrupted run. Only in the main thread, where handlers run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    # A handler installed outside Python (getsignal None) could not be put back: such a signal is left alone.
    wanted = [sig for name in ("SIGINT", "SIGTERM", "SIGHUP")
              if (sig := getattr(signal, name, None)) is not None and signal.getsignal(sig) is not None]
    previous = {sig: signal.signal(sig, lambda signum, _frame: held.append(signum)) for sig in wanted}
    try:
        yield
    except BaseException:  # the step failed (a diverged loss): that error ends the run, not a held signal
        _restore_handlers(previous)
        raise
    _restore_handlers(previous)
    if held:
        signal.raise_signal(held[0])


def _restore_handlers(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _check_output_dir(output_dir: str) -> None:
    """Make ``output_dir`` before any training, or refuse it (a file, a place without write access): the first
    checkpoint found out, after the training it was to save."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output_dir: {output_dir} is a file; give a folder for the checkpoints")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot write in {output_dir} ({exc.strerror}); choose a folder you may "
                          "write to") from None


class Trainer:
    """Owns the model, optimiser, data sampler and checkpoints of one training run.

    Args:
        config: The training config.
        progress: Show a progress bar.
    """

    def __init__(self, config: TrainConfig, *, progress: bool = False) -> None:
        self.config = config
        self.progress = progress
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.bank = load_bank()
        unknown = [i for i in config.intents if i not in self.bank.ids]
        if unknown:
            raise ConfigError(f"intents: {unknown[0]!r} is not an intent of the prompt bank "
                              f"({', '.join(self.bank.ids)})")
        medical = [i for i in config.intents if i in MEDICAL_INTENTS]
        if medical:
            raise ConfigError(f"intents: {medical[0]!r} is a medical intent; the trainer draws infrared-visible pairs "
                              "and has no degradation for it (medical pairs are fused by the medical rule, "
                              "docs/medical.md); leave it out")
        self.export = None if config.export is None else config.export.replace("{output_dir}", config.output_dir)
        _check_export(self.export, config.data_root, config.output_dir)
        root = Path(config.data_root)
        if not root.is_dir():
            where = "" if root.is_absolute() else f" (relative to the working directory {Path.cwd()})"
            raise ConfigError(f"data_root: {root} is not a folder{where}; expected the shared data sets (e.g. "
                              "../shared/data from a source checkout) or a folder of your own ir/ and vi/ pairs")
        try:
            self.sources = find_pair_folders(root)
            self.pairs = load_training_pairs(root, sources=self.sources)
        except ValueError as exc:
            raise ConfigError(f"data_root: {exc}") from None
        if not self.pairs:
            raise ConfigError(f"data_root: {root}: no usable IR-VIS pair (see the warnings above for why each set "
                              "was skipped)")
        largest = max(max(ir.shape) for ir, _, _ in self.pairs)
        if config.crop > largest:  # every crop mostly mirror padding, and memory growing with its square
            raise ConfigError(f"crop: {config.crop} px is larger than every training image (the largest is "
                              f"{largest} px on its longer side as loaded); at most {largest - largest % 8}")
        _check_output_dir(config.output_dir)
        self.sampler = CropSampler(self.pairs, crop=config.crop, seed=config.seed)
        self.teacher: FusionNet | None = None
        self.init_metadata: dict | None = None
        if config.init_weights is None:
            self.model = FusionNet(self.bank.ids, **vars(config.model))
        else:
            self.model, self.teacher = self._refinement_models(config)
        self.model = self.model.to(memory_format=torch.channels_last).train()
        trainable = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        # Weight decay on the head alone pulls the learned maps towards the fixed band rule.
        head = [p for name, p in trainable if name.startswith("head.")]
        rest = [p for name, p in trainable if not name.startswith("head.")]
        groups = [{"params": rest, "weight_decay": 0.0}, {"params": head, "weight_decay": config.head_decay}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate)
        self.step = 0
        self.seconds_before = 0.0
        """Training time of the earlier sessions of a resumed run (kept in checkpoints)."""
        self._session_started = time.perf_counter()
        self.running_loss: dict[str, float] = {}
        """The loss and its terms, averaged over recent steps (what the log shows; kept in checkpoints)."""
        self.output_dir = Path(config.output_dir)
        self.intent_ids = list(config.intents)
        self.intent_probabilities = np.array([config.intents[i] for i in self.intent_ids], dtype=np.float64)
        self.intent_probabilities /= self.intent_probabilities.sum()
        self.rng = np.random.default_rng(config.seed + 1)

    def _refinement_models(self, config: TrainConfig) -> tuple[FusionNet, FusionNet]:
        """The network to refine (only ``refine.trainable`` parameters trainable) and its frozen teacher."""
        refine = config.refine
        if refine.intent not in config.intents:
            raise ConfigError(f"refine.intent: {refine.intent!r} is not one of the sampled intents "
                              f"({', '.join(config.intents)})")
        model, self.init_metadata = load_model(config.init_weights, key="init_weights")
        if model.intents != self.bank.ids:
            raise ConfigError(f"init_weights: {config.init_weights} was trained on the intents "
                              f"{', '.join(model.intents)}, the prompt bank has {', '.join(self.bank.ids)}")
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        names = [name for name, _ in model.named_parameters()]
        for prefix in refine.trainable:
            if not any(name.startswith(prefix) for name in names):
                raise ConfigError(f"refine.trainable: no parameter name starts with {prefix!r} "
                                  f"(top-level names: {', '.join(sorted({n.split('.')[0] for n in names}))})")
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(tuple(refine.trainable)))
        return model, teacher

    # ---------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write model, optimiser and random states to ``output_dir/last.pt`` (atomically)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / CHECKPOINT
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "sampler_rng": json.dumps(self.sampler.rng.bit_generator.state),
            "running_loss": json.dumps(self.running_loss),
            "seconds": self.seconds_before + time.perf_counter() - self._session_started,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    def resume(self) -> bool:
        """Continue from ``output_dir/last.pt`` if it exists; returns whether it did."""
        path = self.output_dir / CHECKPOINT
        if not path.is_file():
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except Exception as exc:  # any failure here means the same thing to the user
            reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            reason = reason if len(reason) <= 300 else reason[:297] + "..."
            raise ConfigError(f"{path}: cannot resume from this checkpoint ({reason}); resume with the settings it "
                              "was saved with (model.*), or train into another output_dir") from None
        if int(state["step"]) > self.config.steps:
            raise ConfigError(f"steps: {self.config.steps}, and the checkpoint {path} is already at step "
                              f"{int(state['step'])}; set steps to that or more, or train into another output_dir")
        self.step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])
        self.sampler.rng.bit_generator.state = json.loads(state["sampler_rng"])
        self.running_loss = json.loads(state.get("running_loss", "{}"))  # older checkpoints: start afresh
        self.seconds_before = float(state.get("seconds", 0.0))
        log.info("resumed from %s at step %d", path, self.step)
        return True

    # ------------------------------------------------------------------------------------- training
    def learning_rate(self) -> float:
        """Cosine decay from the configured rate to 5% of it, after a 100-step warm-up."""
        base, steps = self.config.learning_rate, self.config.steps
        if self.step < 100:
            return base * (self.step + 1) / 100
        progress = (self.step - 100) / max(1, steps - 100)
        return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def _intent_weights(self, intents: list[str]) -> torch.Tensor:
        weights = torch.zeros(len(intents), len(self.bank.ids))
        balanced = self.bank.ids.index("balanced")
        for row, intent in enumerate(intents):
            weights[row, self.bank.ids.index(intent)] = 1.0
            if intent != "balanced" and self.rng.random() < self.config.mix_with_balanced:
                share = self.rng.uniform(0.0, 0.5)
                weights[row] *= 1 - share
                weights[row, balanced] += share
        return weights

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns the loss and its terms."""
        batch = self.sampler.batch(self.config.batch_size, self.intent_ids, self.intent_probabilities)
        intents = batch["intent"]
        weights = self._intent_weights(intents)
        emphasis = emphasis_matrix([self.bank.intent(i).recipe.get("emphasis", {}) for i in intents])
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        fused = self.model(batch["ir_in"], batch["vis_in"], weights)
        if self.teacher is None:
            with torch.no_grad():
                rule_target = rule_fusion(torch.cat([batch["ir"], batch["vis"]], dim=1))
            loss, terms = fusion_loss(fused, batch["ir"], batch["vis"], emphasis, rule_target)
        else:
            targets = distillation_targets(self.teacher, batch["ir_in"], batch["vis_in"], weights, intents,
                                           self.config.refine)
            loss, terms = (fused - targets).abs().mean(), {}
        if not torch.isfinite(loss):
            checkpoint = self.output_dir / CHECKPOINT
            kept = (f"the checkpoint {checkpoint} is from before (--resume continues from it)" if checkpoint.exists()
                    else "no checkpoint was written yet")
            raise StreamfuseError(f"training diverged at step {self.step + 1}: the loss is {loss.item()}; nothing "
                                  f"was exported and {kept}; lower learning_rate and train again")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()), **terms}

    @torch.no_grad()
    def _untrained_intents_follow_balanced(self) -> list[str]:
        """Give intents that were never sampled (e.g. the medical ones) the balanced intent's tokens.

        Their own tokens are still their random initial values, which would steer the network
        arbitrarily; with the balanced tokens, such a prompt fuses as balanced does. When refining, an
        intent this run does not sample keeps the tokens of the initial weights (trained there), unless
        those were exported untrained too. Returns their ids.
        """
        sampled = {intent for intent, weight in self.config.intents.items() if weight > 0}
        if self.config.mix_with_balanced > 0:
            sampled.add("balanced")  # blended into other intents' samples
        untrained = [intent for intent in self.bank.ids if intent not in sampled]
        if self.init_metadata is not None:  # refining: an intent not sampled now keeps what the initial weights had
            untrained = [intent for intent in untrained if intent in self.init_metadata.get("untrained_intents", [])]
        balanced = self.model.tokens[self.bank.ids.index("balanced")].clone()
        for intent in untrained:
            self.model.tokens[self.bank.ids.index(intent)] = balanced
        if untrained:
            log.info("intents not trained, exported with the balanced tokens: %s", ", ".join(untrained))
        return untrained

    def run(self) -> Path | None:
        """Train to ``steps`` (checkpointing; Ctrl-C saves first), then export the weights if configured."""
        config = self.config
        log.info("%s %s: %d parameters (%d trainable), %d pairs from %s, %d steps of %d crops of %dpx",
                 "training" if self.teacher is None else f"refining {config.init_weights}",
                 type(self.model).__name__, sum(p.numel() for p in self.model.parameters()),
                 parameter_count(self.model), len(self.pairs),
                 ", ".join(s.name for s in self.sources), config.steps, config.batch_size, config.crop)
        if self.export is not None and Path(self.export).is_file():
            log.warning("export: %s exists and will be replaced by this run's weights at the end (another "
                        "--set export=PATH keeps it)", self.export)
        bar = tqdm(total=config.steps, initial=self.step, disable=not self.progress, unit="step", file=sys.stderr)
        started, start_step = time.perf_counter(), self.step
        self._session_started = started
        try:
            while self.step < config.steps:
                with _signals_held():  # a stop comes between steps: a checkpoint holds whole steps
                    values = self.train_step()
                self.running_loss = {k: 0.9 * self.running_loss.get(k, v) + 0.1 * v for k, v in values.items()}
                bar.update()
                if self.step % config.log_every == 0 or self.step == config.steps:
                    rate = (self.step - start_step) / (time.perf_counter() - started)
                    eta = (config.steps - self.step) / rate if rate else 0.0
                    terms = " ".join(f"{t}={v:.4f}" for t, v in self.running_loss.items() if t != "loss")
                    message = (f"step {self.step}/{config.steps} loss={self.running_loss['loss']:.4f} {terms} "
                               f"lr={self.learning_rate():.5f} {rate:.2f} steps/s eta {eta / 60:.1f} min")
                    bar.write(message, file=sys.stderr) if self.progress else log.info(message)
                if self.step % config.checkpoint_every == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            with _signals_held():  # a second Ctrl-C is taken after the checkpoint is whole
                self.save_checkpoint()
                log.warning("interrupted at step %d: checkpoint saved, continue with --resume", self.step)
            raise
        finally:
            bar.close()
        checkpoint = self.save_checkpoint()
        if self.export is None:
            log.info("trained to step %d; no weights exported (export is not set): the checkpoint %s resumes; "
                     "to export it, run again with --resume --set export=PATH", self.step, checkpoint)
            return None
        untrained = self._untrained_intents_follow_balanced()
        metadata = {
            "steps": self.step, "batch_size": config.batch_size, "crop": config.crop, "seed": config.seed,
            "learning_rate": config.learning_rate, "intents": config.intents, "pairs": len(self.pairs),
            "sources": [s.name for s in self.sources],
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "seconds": round(self.seconds_before + time.perf_counter() - started, 1),  # over every session
            "untrained_intents": untrained,
        }
        if self.teacher is not None:
            metadata["refined_from"] = {"weights": config.init_weights, "refine": vars(config.refine),
                                        "metadata": self.init_metadata}
        path = save_weights(self.model.to(memory_format=torch.contiguous_format), self.export, metadata)
        log.info("exported weights to %s", path)
        return path
