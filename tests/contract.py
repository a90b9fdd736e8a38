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
}
DEGENERATION_KEYS = {
    "distinct_answers_before",
    "distinct_answers_after",
    "repeated_ngram_rate_before",
    "repeated_ngram_rate_after",
    "mean_words_before",
    "mean_words_after",
    "new_common_phrases",
}
