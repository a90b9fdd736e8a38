"""The report's contract keys (``docs/architecture.md``), checked by the CLI, API and degeneration tests alike."""

REPORT_KEYS = {
    "model",
    "settings",
    "baseline_outputs",
    "aligned_outputs",
    "changed",
    "log_history",
    "health",
    "eval",
    "timings",
}
EVAL_KEYS = {
    "heldout_reward_accuracy",
    "heldout_mean_margin",
    "kl_to_reference",
    "perplexity_before",
    "perplexity_after",
    "contrast_accuracy",
    "capability_accuracy_before",
    "capability_accuracy_after",
    "heldout_curve",
    "degeneration",
    "heldout_count",
    "heldout_accuracy_interval",
    "contrast_count",
    "contrast_accuracy_interval",
    "capability_count",
    "capability_accuracy_interval_before",
    "capability_accuracy_interval_after",
    "checked_capability_before",
    "checked_capability_after",
    "checked_capability_count",
    "checked_capability_interval_before",
    "checked_capability_interval_after",
    "checked_capability_lost",
}
#: The win rate's keys, in every report of a run with held-out pairs.
WIN_KEYS = {
    "judge",
    "win_rate",
    "win_count",
    "win_interval",
    "win_per_prompt",
    "mean_words_original",
    "mean_words_policy",
    "win_eval_count",
}
#: The verdict's keys: ``remedy`` is the cure of its most severe finding that has one, or null.
HEALTH_KEYS = {"verdict", "findings", "codes", "best_step", "details", "remedy"}
#: Each point of ``eval.heldout_curve``: its step, its figures, and each accuracy's count and interval.
CURVE_POINT_KEYS = {"step", "accuracy", "count", "accuracy_interval", "margin", "margin_interval"}
DEGENERATION_KEYS = {
    "distinct_answers_before",
    "distinct_answers_after",
    "repeated_ngram_rate_before",
    "repeated_ngram_rate_after",
    "mean_words_before",
    "mean_words_after",
    "new_common_phrases",
}
