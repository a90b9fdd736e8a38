"""AlignLab's DPO run with a probe: step times, and held-out preference accuracy after every step.

It trains what :func:`alignlab.training.trainer.build_trainer` builds (the trainer ``train_policy`` runs)
with one callback added. After each step the callback scores the held-out pairs with the policy
(the reference's scores are computed once, before training) and the time that takes is left out
of the step times. Used by the time-to-shift section and by the candidates.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch
from transformers import TrainerCallback

from alignlab.data.pairs import PreferencePair
from alignlab.evidence.evaluation import mean_token_kl, perplexity
from alignlab.evidence.probes import implicit_rewards, preference_accuracy
from alignlab.models.loading import LoadedModel
from alignlab.models.logprobs import sequence_logps
from alignlab.registry.settings import TrainingSettings
from alignlab.training.trainer import build_trainer
from bench.common import cuda_peak_mib, load_seed_lab, peak_rss_mib, reset_cuda_peak, sync

SHIFT_ACCURACY = 0.75


class HeldoutScorer:
    """Held-out accuracy of a policy against reference scores computed once."""

    def __init__(self, loaded: LoadedModel, pairs: list[PreferencePair], beta: float):
        self.loaded, self.beta = loaded, beta
        self.prompts = [p.prompt for p in pairs]
        self.chosen = [p.chosen for p in pairs]
        self.rejected = [p.rejected for p in pairs]
        self.ref_chosen = sequence_logps(loaded.model, loaded, self.prompts, self.chosen)
        self.ref_rejected = sequence_logps(loaded.model, loaded, self.prompts, self.rejected)

    def __call__(self, policy: torch.nn.Module) -> tuple[float, float]:
        was_training = policy.training
        chosen = sequence_logps(policy, self.loaded, self.prompts, self.chosen)
        rejected = sequence_logps(policy, self.loaded, self.prompts, self.rejected)
        policy.train(was_training)
        return preference_accuracy(
            implicit_rewards(chosen, self.ref_chosen, self.beta),
            implicit_rewards(rejected, self.ref_rejected, self.beta),
        )

    def drift(self, policy: torch.nn.Module) -> tuple[float, float]:
        """(KL per token to the reference on the held-out chosen answers, perplexity on neutral text)."""
        was_training = policy.training
        kl = mean_token_kl(policy, self.loaded.model, self.loaded, self.prompts, self.chosen)
        ppl = perplexity(policy, self.loaded)
        policy.train(was_training)
        return kl, ppl


class ProbeCallback(TrainerCallback):
    """Step periods with the probe's own evaluation time taken out."""

    def __init__(self, device: torch.device, scorer: HeldoutScorer | None):
        self.device, self.scorer = device, scorer
        self.mark = 0.0
        self.train_begin = 0.0
        self.step_seconds: list[float] = []
        self.accuracy: list[float] = []
        self.margin: list[float] = []
        self.kl: list[float] = []
        self.perplexity: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback API
        sync(self.device)
        self.train_begin = self.mark = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        sync(self.device)
        now = time.perf_counter()
        self.step_seconds.append(now - self.mark)
        if self.scorer is not None:
            accuracy, margin = self.scorer(model)
            self.accuracy.append(accuracy)
            self.margin.append(margin)
            kl, ppl = self.scorer.drift(model)
            self.kl.append(kl)
            self.perplexity.append(ppl)
        self.mark = time.perf_counter()  # the next step's period starts after the probe


def pairs_per_step(n_pairs: int, batch_size: int, steps: int) -> list[int]:
    """Pairs in each step's batch: full batches, then the remainder at each epoch's end."""
    per_epoch = [min(batch_size, n_pairs - start) for start in range(0, n_pairs, batch_size)]
    return [per_epoch[i % len(per_epoch)] for i in range(steps)]


def first_shift(accuracy: list[float], threshold: float = SHIFT_ACCURACY) -> int | None:
    """1-based step at which held-out accuracy first reaches ``threshold``, or None."""
    return next((i + 1 for i, a in enumerate(accuracy) if a >= threshold), None)


def probe_run(
    loaded: LoadedModel,
    pairs: list[PreferencePair],
    heldout: list[PreferencePair],
    settings: TrainingSettings,
    every_step: bool = True,
    drift: bool = True,
) -> dict[str, Any]:
    """Train like ``train_policy`` and report step times, held-out accuracy per step and drift."""
    device = loaded.device
    reset_cuda_peak()
    scorer = HeldoutScorer(loaded, heldout, settings.beta) if heldout else None
    started = time.perf_counter()
    callback = ProbeCallback(device, scorer if every_step else None)
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as scratch:
        trainer = build_trainer(loaded, pairs, settings, scratch, [callback])
        trainer.train()
        trained = trainer.model
    loaded.tokenizer.padding_side = "left"
    trained.eval()
    total = time.perf_counter() - started
    probe_seconds = total - (callback.train_begin - started) - sum(callback.step_seconds)
    setup = callback.train_begin - started
    rows = [r for r in trainer.state.log_history if "loss" in r]
    out: dict[str, Any] = {
        "settings": settings.to_dict(),
        "setup_seconds": setup,  # policy copy, tokenising, reference log-probs when pre-computed
        "step_seconds": callback.step_seconds,
        "pairs_per_step": pairs_per_step(len(pairs), settings.batch_size, len(callback.step_seconds)),
        "heldout_accuracy": callback.accuracy,
        "heldout_margin": callback.margin,
        "kl_per_step": callback.kl,
        "perplexity_per_step": callback.perplexity,
        "losses": [float(r["loss"]) for r in rows],
        "train_reward_accuracy": [float(r.get("rewards/accuracies", float("nan"))) for r in rows],
        "probe_seconds": probe_seconds,
    }
    shift = first_shift(callback.accuracy)
    out["shift_step"] = shift
    out["shift_train_seconds"] = setup + sum(callback.step_seconds[:shift]) if shift else None
    if scorer is not None and not every_step:
        out["final_heldout_accuracy"], out["final_heldout_margin"] = scorer(trained)
    elif callback.accuracy:
        out["final_heldout_accuracy"], out["final_heldout_margin"] = callback.accuracy[-1], callback.margin[-1]
    if drift and heldout:
        # Teacher-forced on the held-out chosen answers: a cheap proxy for the lab's KL on its own outputs.
        out["kl_heldout_chosen"] = mean_token_kl(
            trained, loaded.model, loaded, [p.prompt for p in heldout], [p.chosen for p in heldout]
        )
        out["perplexity_before"] = perplexity(loaded.model, loaded)
        out["perplexity_after"] = perplexity(trained, loaded)
    out["peak_rss_mib"] = peak_rss_mib()
    out["cuda_peak_mib"] = cuda_peak_mib()
    del trainer, trained
    return out


def in_process(spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """One probed run on the seed lab in this fresh process (a candidate's): ``options['settings']``."""
    from alignlab.models.loading import load_model

    preset = load_seed_lab()
    return probe_run(
        load_model(spec),
        preset.pairs,
        preset.heldout_pairs,
        TrainingSettings.from_dict(options.get("settings", {})),
        every_step=options.get("every_step", True),
    )
