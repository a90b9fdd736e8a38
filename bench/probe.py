"""AlignLab's DPO run with a probe: step times, and held-out preference accuracy after every step.

``train_dpo`` takes no extra callbacks, so this builds the same trainer it builds (the same
``TrainingSettings.to_dpo_config``, dataset, policy copy and LoRA config) and adds one callback.
After each step the callback scores the held-out pairs with the policy (the reference's scores are
computed once, before training) and the time that takes is left out of the step times. Used by
the time-to-shift section and by the candidates, which also vary what ``train_dpo`` cannot
(an explicit reference model instead of pre-computed log-probs).
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import replace
from typing import Any

import torch
from transformers import TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback

from alignlab.evaluation import completion_logps, implicit_rewards, mean_token_kl, perplexity, preference_accuracy
from alignlab.models import LoadedModel, copy_for_training
from alignlab.presets import PreferencePair
from alignlab.training import TrainingSettings, to_trl_dataset
from bench.common import cuda_peak_mib, peak_rss_mib, reset_cuda_peak, sync

SHIFT_ACCURACY = 0.75


class HeldoutScorer:
    """Held-out accuracy of a policy against reference scores computed once."""

    def __init__(self, loaded: LoadedModel, pairs: list[PreferencePair], beta: float):
        self.loaded, self.beta = loaded, beta
        self.prompts = [p.prompt for p in pairs]
        self.chosen = [p.chosen for p in pairs]
        self.rejected = [p.rejected for p in pairs]
        self.ref_chosen = completion_logps(loaded.model, loaded, self.prompts, self.chosen)
        self.ref_rejected = completion_logps(loaded.model, loaded, self.prompts, self.rejected)

    def __call__(self, policy: torch.nn.Module) -> tuple[float, float]:
        was_training = policy.training
        chosen = completion_logps(policy, self.loaded, self.prompts, self.chosen)
        rejected = completion_logps(policy, self.loaded, self.prompts, self.rejected)
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


def first_shift(accuracy: list[float], threshold: float = SHIFT_ACCURACY) -> int | None:
    """1-based step at which held-out accuracy first reaches ``threshold``, or None."""
    return next((i + 1 for i, a in enumerate(accuracy) if a >= threshold), None)


def probe_run(
    loaded: LoadedModel,
    pairs: list[PreferencePair],
    heldout: list[PreferencePair],
    settings: TrainingSettings,
    every_step: bool = True,
    explicit_reference: bool = False,
    drift: bool = True,
) -> dict[str, Any]:
    """Train like ``train_dpo`` and report step times, held-out accuracy per step and drift."""
    from trl import DPOTrainer

    device = loaded.device
    reset_cuda_peak()
    scorer = HeldoutScorer(loaded, heldout, settings.beta) if heldout else None
    started = time.perf_counter()
    set_seed(settings.seed)
    policy = copy_for_training(loaded)
    args_settings = settings
    reference = None
    if explicit_reference:
        args_settings = replace(settings, precompute_ref_log_probs=False)
        reference = copy.deepcopy(loaded.model)
    callback = ProbeCallback(device, scorer if every_step else None)
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as scratch:
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=args_settings.to_dpo_config(scratch, device),
            train_dataset=to_trl_dataset(loaded, pairs),
            processing_class=loaded.tokenizer,
            peft_config=args_settings.peft_config(),
            callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)
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
        "explicit_reference": explicit_reference,
        "setup_seconds": setup,  # policy copy, tokenising, reference log-probs when pre-computed
        "step_seconds": callback.step_seconds,
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
    del trainer, trained, policy, reference
    return out
