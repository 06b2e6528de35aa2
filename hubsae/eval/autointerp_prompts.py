"""Autointerp prompts and the reading of their answers.

Contexts are shown as delphi and SAEBench show them: the tokens a latent fires on between `<<` and
`>>` (consecutive marked tokens share one pair), newlines as "↵" (Paulo et al., arXiv 2410.13928,
Sec. 3; Karvonen et al., arXiv 2503.09532, autointerp), and the explainer also gets delphi's list of
marked tokens with their activations on a 1..10 scale. The explainer answers with one line
`Explanation: ...`; a scorer answers with a list of 0/1, one per numbered example (delphi's format).
Answers are read leniently (also yes/no per example and SAEBench's list of example numbers);
whatever cannot be read is returned as None, so the caller counts it instead of guessing.
"""

import math
import re
from collections.abc import Sequence

Messages = list[dict[str, str]]

EXPLAIN_SYSTEM = (
    "You study one latent of a neural network's sparse autoencoder. The latent responds to particular "
    "words, word pieces or ideas in text. You get numbered text excerpts on which it is active; the "
    "tokens where it fires are between << and >>, and after each excerpt its activations on them are "
    "listed from 1 to 10. Say in one short phrase (at most 15 words) what the latent responds to. Do not "
    "mention the << >> marks, quote no whole excerpt, give no list of guesses. "
    "Answer with one line: Explanation: <your phrase>"
)
EXPLAIN_QUESTION = "What does the latent respond to? Answer with one line: Explanation: <your phrase>"

DETECT_SYSTEM = (
    "You test an explanation of a neural network latent. You get the explanation and numbered text "
    "excerpts. For each excerpt decide whether the latent is active somewhere in it, judging only by "
    "the explanation: 1 if it is, 0 if it is not. Answer with a Python list of 0s and 1s, one per "
    "excerpt, in order, and nothing else."
)
FUZZ_SYSTEM = (
    "You test an explanation of a neural network latent. You get the explanation and numbered text "
    "excerpts in which some tokens are marked between << and >>. Some excerpts are marked correctly "
    "(the marked tokens are what the explanation describes), others are marked at random. For each "
    "excerpt answer 1 if every marked token fits the explanation, 0 if the marks are wrong. Answer "
    "with a Python list of 0s and 1s, one per excerpt, in order, and nothing else."
)
SHOT_EXPLANATION = "places where ships and boats moor"
# the worked example of each scorer: (excerpt, answer); a prompt shows as many as it has excerpts (at most 3)
DETECT_SHOT = [
    ("we waited at the harbour for the ferry", 1),
    ("the recipe needs two cups of flour", 0),
    ("the yacht left the marina at noon", 1),
]
FUZZ_SHOT = [
    ("we waited at the <<harbour>> for the ferry", 1),
    ("the recipe <<needs>> two cups of flour", 0),
    ("the yacht left the <<marina>> at noon", 1),
]


def mark_tokens(tokens: Sequence[str], marked: Sequence[bool]) -> str:
    """The excerpt as one string, each run of marked tokens between `<<` and `>>`, newlines as "↵"."""
    if len(tokens) != len(marked):
        raise ValueError(f"{len(tokens)} tokens but {len(marked)} marks")
    out, inside = [], False
    for token, mark in zip(tokens, marked, strict=True):
        if mark != inside:
            out.append("<<" if mark else ">>")
            inside = mark
        out.append(token)
    if inside:
        out.append(">>")
    return "".join(out).replace("\r", "").replace("\n", "↵")


def numbered(excerpts: Sequence[str]) -> str:
    return "\n".join(f"Example {i}: {text}" for i, text in enumerate(excerpts, start=1))


def activation_line(tokens: Sequence[str], acts: Sequence[float], marked: Sequence[bool]) -> str:
    """delphi's line after an excerpt: each marked token with its activation scaled to 1..10 of the
    context's maximum, `Activations: ("tok", 10), ("en", 4)`."""
    peak = max(acts, default=0.0)
    pairs = [
        f"({t.strip()!r}, {max(1, math.ceil(10 * a / peak))})"
        for t, a, m in zip(tokens, acts, marked, strict=True)
        if m
    ]
    return "Activations: " + ", ".join(pairs)


def explain_messages(excerpts: Sequence[str], activations: Sequence[str] | None = None) -> Messages:
    """The explainer's chat: the rules, then the latent's marked excerpts, each followed by its
    `activation_line` when given. No worked example: SmolLM2-135M copies one into its answer."""
    lines = []
    for i, text in enumerate(excerpts, start=1):
        lines.append(f"Example {i}: {text}")
        if activations is not None:
            lines.append(activations[i - 1])
    return [
        {"role": "system", "content": EXPLAIN_SYSTEM},
        {"role": "user", "content": "\n".join(lines) + "\n\n" + EXPLAIN_QUESTION},
    ]


def score_messages(kind: str, explanation: str, excerpts: Sequence[str]) -> Messages:
    """A scorer's chat (`kind` "detection": plain excerpts, "fuzzing": marked excerpts): the rules, worked
    examples with as many excerpts as this prompt has (one turn of up to 3; for one excerpt, three
    one-excerpt turns, so the answers seen hold both a 1 and a 0), then the explanation and excerpts."""
    system, shot = {"detection": (DETECT_SYSTEM, DETECT_SHOT), "fuzzing": (FUZZ_SYSTEM, FUZZ_SHOT)}[kind]
    turns = [[pair] for pair in shot] if len(excerpts) == 1 else [shot[: min(len(excerpts), len(shot))]]
    messages = [{"role": "system", "content": system}]
    for turn in turns:
        messages.append(
            {"role": "user", "content": f"Explanation: {SHOT_EXPLANATION}\n\n{numbered([t for t, _ in turn])}"}
        )
        messages.append({"role": "assistant", "content": str([label for _, label in turn])})
    return [*messages, {"role": "user", "content": f"Explanation: {explanation}\n\n{numbered(excerpts)}"}]


_LABEL = re.compile(r"explanation\s*\]?\s*[:\-]\s*(.+)", re.IGNORECASE)


def parse_explanation(answer: str) -> str:
    """The explanation in a model's answer: the text after "Explanation:" (or delphi's "[EXPLANATION]:"),
    else after "activates on" (SAEBench's form), else the first non-empty line; "" when there is none."""
    match = _LABEL.search(answer)
    if match:
        text = match.group(1)
    elif "activates on" in answer:
        text = answer.split("activates on")[-1]
    else:
        text = next((line for line in answer.splitlines() if line.strip()), "")
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = text.replace("<<", "").replace(">>", "").strip().strip("\"'`*").strip()
    return text.rstrip(".").strip()[:300]


_WORD = {"1": True, "0": False, "yes": True, "no": False, "true": True, "false": False}
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_PER_EXAMPLE = re.compile(r"example\s*(\d+)\s*[:.)\-]?\s*(yes|no|true|false|1|0)\b", re.IGNORECASE)


def parse_labels(answer: str, n: int) -> list[bool] | None:
    """Read one 0/1 per example from a scorer's answer, or None when it does not say.

    Accepted, in this order: a bracketed list of n values 0/1/yes/no/true/false ("[1, 0, 1]");
    "Example k: yes" for every k; n bare 0/1 or yes/no words; "None"; a list of example numbers
    1..n meaning those are active (SAEBench's "2, 5"). Anything else (wrong count, numbers out of
    range, prose) is None.
    """
    for group in _BRACKETS.findall(answer):
        items = [w.strip(" '\"").lower() for w in re.split(r"[,\s]+", group) if w.strip(" '\"")]
        if len(items) == n and all(w in _WORD for w in items):
            return [_WORD[w] for w in items]
    per_example = {int(k): _WORD[v.lower()] for k, v in _PER_EXAMPLE.findall(answer)}
    if sorted(per_example) == list(range(1, n + 1)):
        return [per_example[k] for k in range(1, n + 1)]
    line = next((s for s in answer.splitlines() if s.strip()), "").strip().lower()
    words = re.findall(r"\b(yes|no|true|false|\d+)\b", line)
    if len(words) == n and all(w in _WORD for w in words):
        return [_WORD[w] for w in words]
    if re.fullmatch(r"[\[\(]?\s*(none|nothing|no examples?)\.?\s*[\]\)]?\.?", line):
        return [False] * n
    numbers = re.findall(r"\d+", line)
    rest = re.sub(r"\d+|and|,|\s|[\[\]().]", "", line)
    if numbers and not rest and all(1 <= int(k) <= n for k in numbers):
        chosen = {int(k) for k in numbers}
        return [k in chosen for k in range(1, n + 1)]
    return None
