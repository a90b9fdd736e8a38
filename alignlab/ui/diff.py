"""Word-by-word differences between a before and an after answer, as HTML.

``difflib`` aligns the two word sequences; words only in *before* are struck through in red,
words only in *after* are underlined in green, so a projector audience sees at a glance what
training changed. Text is HTML-escaped: model output is untrusted.
"""

from __future__ import annotations

import difflib
import html


def word_diff(before: str, after: str) -> tuple[str, str]:
    """(before as HTML with removals marked, after as HTML with additions marked)."""
    a, b = before.split(), after.split()
    left: list[str] = []
    right: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        old = html.escape(" ".join(a[i1:i2]))
        new = html.escape(" ".join(b[j1:j2]))
        if op == "equal":
            left.append(old)
            right.append(new)
            continue
        if old:
            left.append(f'<del class="al-del">{old}</del>')
        if new:
            right.append(f'<ins class="al-ins">{new}</ins>')
    return " ".join(left) or "<em>(empty)</em>", " ".join(right) or "<em>(empty)</em>"


def comparison_html(prompts: list[str], before: list[str], after: list[str]) -> str:
    """A table: one row per eval prompt, before and after side by side, changes highlighted."""
    rows = []
    for i, (prompt, old, new) in enumerate(zip(prompts, before, after), start=1):
        changed = old.strip() != new.strip()
        left, right = word_diff(old, new)
        badge = (
            '<span class="al-badge al-changed">changed</span>'
            if changed
            else ('<span class="al-badge al-same">same</span>')
        )
        rows.append(
            f'<tr class="al-row"><td colspan="2" class="al-prompt">{i}. {html.escape(prompt)} {badge}</td></tr>'
            f'<tr><td class="al-before" data-label="Before training">{left}</td>'
            f'<td class="al-after" data-label="After training">{right}</td></tr>'
        )
    return (
        '<table class="al-compare"><thead><tr><th>Before training</th><th>After training</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def runs_html(prompts: list[str], baseline: list[str], runs: list[tuple[str, list[str]]]) -> str:
    """Baseline | run A | run B | ... per prompt: each run's words that differ from the baseline marked."""
    if not runs:
        return ""
    width = f"{100 / (len(runs) + 1):.0f}%"
    head = "".join(f'<th style="width:{width}">{html.escape(title)}</th>' for title, _ in runs)
    rows = []
    for i, (prompt, old) in enumerate(zip(prompts, baseline)):
        cells = [f'<td class="al-before" data-label="Baseline">{html.escape(old) or "<em>(empty)</em>"}</td>']
        changed = 0
        for title, texts in runs:
            new = texts[i] if i < len(texts) else ""
            changed += old.strip() != new.strip()
            cells.append(f'<td class="al-after" data-label="{html.escape(title)}">{word_diff(old, new)[1]}</td>')
        badge = f'<span class="al-badge al-changed">{changed} of {len(runs)} runs changed it</span>'
        rows.append(
            f'<tr class="al-row"><td colspan="{len(runs) + 1}" class="al-prompt">{i + 1}. {html.escape(prompt)} '
            f"{badge}</td></tr><tr>{''.join(cells)}</tr>"
        )
    return (
        f'<table class="al-compare al-runs"><thead><tr><th style="width:{width}">Baseline</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
