"""Generated attention traces that look like a real T3 run, one per analyzer branch.

Layout as in upstream inference: the prompt is [cond | text | BOS | BOS]; the first pass
gives (T0, T0) causal softmax matrices, each later KV-cached pass a (1, T0 + k) row. A
scenario says, frame by frame, where the aligned heads look in the text (`Frame.peaks`);
rows are built as softmax outputs over noisy logits carrying that mass. The three heads
differ (gain, spill to a neighbour) as real aligned heads do, so a port that reads the
wrong head or averages wrongly is visible.

Everything is seeded; `build_inputs(scenario)` is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .replay import TraceInputs

COND_LEN = 34  # speaker embedding (1) + perceiver-resampled prompt speech (32) + emotion (1)
N_BOS = 2  # initial speech token, then the BOS the inference loop appends
MINI_VOCAB, MINI_BOS, MINI_EOS = 64, 62, 63
REAL_VOCAB, REAL_BOS, REAL_EOS = 8194, 6561, 6562  # Chatterbox's speech vocabulary


@dataclass
class Frame:
    peaks: dict[int, float]  # text position -> attention mass the aligned heads put there
    tie: Optional[tuple[int, int]] = None  # two positions forced to exactly equal weight ...
    tie_jitter: float = 0.0  # ... then the second scaled by (1 + jitter): unequal in float32 only


@dataclass(frozen=True)
class HeadStyle:
    gain: float  # share of the frame's mass this head carries
    spill: float  # share of that moved to the neighbouring position
    spill_to: int  # +1 (ahead) or -1 (behind)


# One style per entry of LLAMA_ALIGNED_HEADS: (12, 15), (13, 11), (9, 2).
HEAD_STYLES = (HeadStyle(1.0, 0.0, 1), HeadStyle(0.92, 0.12, 1), HeadStyle(0.8, 0.25, -1))


@dataclass
class Scenario:
    name: str
    description: str
    covers: tuple[str, ...]
    text_len: int
    frames: list[Frame]
    seed: int
    dtype: str = "float32"
    vocab: int = MINI_VOCAB
    bos: int = MINI_BOS
    eos: int = MINI_EOS
    eos_boost: dict[int, float] = field(default_factory=dict)  # frame -> extra EOS logit
    repeat_token_at: tuple[int, ...] = ()  # steps whose previous token repeats the one before
    cond_len: int = COND_LEN


# ---- frame plans -------------------------------------------------------------------------


def speak(rng, start: int, stop: int, frames_per_token=(2, 4), mass=(0.72, 0.9)) -> list[Frame]:
    """Frames reading text positions start..stop-1 in order, blending across each boundary."""
    frames = []
    for position in range(start, stop):
        for n in range(int(rng.integers(frames_per_token[0], frames_per_token[1] + 1))):
            m = float(rng.uniform(*mass))
            if n == 0 and position > 0:
                frames.append(Frame({position - 1: 0.3 * m, position: 0.7 * m}))
            else:
                frames.append(Frame({position: m}))
    return frames


def hold(position: int, count: int, mass: float = 0.85) -> list[Frame]:
    return [Frame({position: mass}) for _ in range(count)]


# ---- rows and matrices -------------------------------------------------------------------


def _softmax_f32(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float32)
    e = np.exp(x - x.max())
    return (e / e.sum(dtype=np.float32)).astype(np.float32)


def _head_peaks(peaks: dict[int, float], style: HeadStyle, text_len: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for position, mass in peaks.items():
        mass *= style.gain
        neighbour = position + style.spill_to
        if style.spill and 0 <= neighbour < text_len:
            out[neighbour] = out.get(neighbour, 0.0) + mass * style.spill
            mass *= 1 - style.spill
        out[position] = out.get(position, 0.0) + mass
    return out


def _row(rng, n_keys: int, visible: int, text: tuple[int, int], frame: Optional[Frame], style: HeadStyle) -> np.ndarray:
    """One causal softmax row over n_keys keys, of which the first `visible` are attendable."""
    i, j = text
    noise = rng.normal(-1.0, 0.8, visible)
    noise[i : min(j, visible)] -= 2.0  # text keys are quiet unless aligned
    peaks = _head_peaks(frame.peaks, style, j - i) if frame else {}
    probs = np.exp(noise - noise.max())
    probs *= (1.0 - sum(peaks.values())) / probs.sum()
    for position, mass in peaks.items():
        probs[i + position] += mass
    if frame and frame.tie:
        a, b = (i + p for p in frame.tie)
        probs[a] = probs[b] = (probs[a] + probs[b]) / 2
        probs[b] *= 1.0 + frame.tie_jitter
    logits = np.full(n_keys, -np.inf)
    logits[:visible] = np.log(probs)
    return _softmax_f32(logits)


def _first_pass(rng, s: Scenario) -> np.ndarray:
    """(3, T0, T0): prompt rows attend at random, the BOS rows read frame 0."""
    i, j = s.cond_len, s.cond_len + s.text_len
    t0 = j + N_BOS
    heads = np.zeros((3, t0, t0), np.float32)
    for h, style in enumerate(HEAD_STYLES):
        for r in range(t0):
            frame = s.frames[0] if r >= j else None
            heads[h, r] = _row(rng, t0, r + 1, (i, j), frame, style)
    return heads


def _later_pass(rng, s: Scenario, k: int) -> np.ndarray:
    i, j = s.cond_len, s.cond_len + s.text_len
    n_keys = j + N_BOS + k
    return np.stack([_row(rng, n_keys, n_keys, (i, j), s.frames[k], style)[None] for style in HEAD_STYLES])


def _round_to(array: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values exactly representable in `dtype` (round to nearest even, as a cast does)."""
    if dtype == "float32":
        return array.astype(np.float32)
    if dtype == "float16":
        return array.astype(np.float16).astype(np.float32)
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(torch.bfloat16).float().numpy()


def _logits(rng, s: Scenario, k: int) -> np.ndarray:
    logits = rng.normal(0.0, 1.5, s.vocab).astype(np.float32)
    logits[s.bos] = -8.0
    logits[s.eos] = float(rng.normal(-1.0, 1.0)) + s.eos_boost.get(k, 0.0)
    return logits[None]


def _tokens(rng, s: Scenario) -> list[int]:
    """Previous tokens as the inference loop passes them: BOS first, then 'sampled' speech
    tokens that never repeat back to back except where the scenario asks."""
    speech = np.array([t for t in range(min(s.vocab, REAL_BOS)) if t not in (s.bos, s.eos)])
    tokens = [s.bos]
    for k in range(1, len(s.frames)):
        if k in s.repeat_token_at:
            tokens.append(tokens[-1])
            continue
        choices = speech[speech != tokens[-1]]
        tokens.append(int(rng.choice(choices)))
    return tokens


def build_inputs(s: Scenario) -> TraceInputs:
    rng = np.random.default_rng(s.seed)
    attns = [_first_pass(rng, s)] + [_later_pass(rng, s, k) for k in range(1, len(s.frames))]
    return TraceInputs(
        text_tokens_slice=(s.cond_len, s.cond_len + s.text_len),
        eos_idx=s.eos,
        dtype=s.dtype,
        attns=[_round_to(a, s.dtype) for a in attns],
        logits=[_round_to(_logits(rng, s, k), s.dtype) for k in range(len(s.frames))],
        prev_tokens=_tokens(rng, s),
    )


# ---- the scenarios -----------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[], Scenario]] = {}


def scenario(fn: Callable[[np.random.Generator], Scenario]):
    seed = 1000 + len(SCENARIOS)

    def make() -> Scenario:
        s = fn(np.random.default_rng(seed))
        s.seed = seed
        return s

    SCENARIOS[fn.__name__] = make
    return fn


def _end_boost(frames: list[Frame]) -> dict[int, float]:
    return {len(frames) - 1: 14.0}


@scenario
def clean_short_sentence(rng):
    frames = speak(rng, 0, 18) + hold(17, 1)
    boost = {k: 4.0 for k in range(5, 12)} | _end_boost(frames)  # EOS would win early without suppression
    return Scenario(
        "clean_short_sentence", "A clean monotonic read of 18 text tokens, ending on a natural EOS.",
        ("clean_run", "eos_suppressed", "eos_suppression_lifted", "natural_end"), 18, frames, 0, eos_boost=boost,
    )


@scenario
def clean_long_passage(rng):
    frames = speak(rng, 0, 110, frames_per_token=(2, 4)) + hold(109, 1)
    return Scenario(
        "clean_long_passage", "A long clean read (110 text tokens, over 300 frames) to completion.",
        ("clean_run", "natural_end", "long_run"), 110, frames, 0, eos_boost=_end_boost(frames),
    )


@scenario
def false_start_weak_onset(rng):
    onset = [Frame({0: 0.2, 1: 0.1}) for _ in range(6)]  # diffuse: nothing >= 0.5 on the first tokens
    frames = onset + speak(rng, 0, 20) + hold(19, 1)
    return Scenario(
        "false_start_weak_onset", "Six frames of diffuse attention before the read starts: false start until then.",
        ("false_start", "late_start"), 20, frames, 0, eos_boost=_end_boost(frames),
    )


@scenario
def false_start_short_text(rng):
    frames = [
        Frame({0: 0.3}), Frame({0: 0.35, 1: 0.1}),  # weak onset
        Frame({0: 0.7, 2: 0.2}), Frame({0: 0.6, 3: 0.25}),  # strong start, but mass on the last tokens
        Frame({1: 0.8}), Frame({1: 0.8}), Frame({2: 0.8}), Frame({2: 0.8}),
    ] + hold(3, 12, 0.88)
    return Scenario(
        "false_start_short_text",
        "Four text tokens: attention on the final tokens keeps it a false start; EOS is never suppressed "
        "(S <= 5); completes, where 0.1.7 crashes, then a long tail forces EOS.",
        ("false_start", "eos_not_suppressed_short_text", "short_text_completion", "long_tail", "forced_eos"),
        4, frames, 0, eos_boost={k: 3.0 for k in range(0, 6)},
    )


@scenario
def short_text_s5(rng):
    frames = speak(rng, 0, 5, frames_per_token=(3, 4)) + hold(4, 2)
    return Scenario(
        "short_text_s5", "Five text tokens, the largest S without EOS suppression; completes (0.1.7 crashes there).",
        ("eos_not_suppressed_short_text", "short_text_completion", "natural_end"), 5, frames, 0,
        eos_boost={2: 3.0, 3: 3.0} | _end_boost(frames),
    )


@scenario
def single_token_text(rng):
    return Scenario(
        "single_token_text", "One text token: complete from the first step; a long tail then forces EOS.",
        ("short_text_completion", "long_tail", "forced_eos"), 1, hold(0, 12, 0.9), 0,
    )


@scenario
def discontinuity_forward(rng):
    frames = speak(rng, 0, 10) + hold(18, 2) + speak(rng, 10, 20)
    frames += hold(28, 1) + speak(rng, 20, 30) + hold(29, 1)  # a jump to the end lifts EOS suppression once
    return Scenario(
        "discontinuity_forward", "Attention jumps 8 tokens ahead, then to the final tokens; the position holds.",
        ("discontinuity_forward", "eos_suppression_lifted", "natural_end"), 30, frames, 0,
        eos_boost=_end_boost(frames),
    )


@scenario
def discontinuity_backward(rng):
    frames = speak(rng, 0, 16) + hold(10, 2) + speak(rng, 16, 30) + hold(29, 1)
    return Scenario(
        "discontinuity_backward", "Attention jumps 5 tokens back for two frames; the position holds. EOS id 0.",
        ("discontinuity_backward", "natural_end"), 30, frames, 0, bos=1, eos=0, eos_boost=_end_boost(frames),
    )


@scenario
def long_tail(rng):
    frames = speak(rng, 0, 16) + hold(15, 14, 0.9)
    return Scenario(
        "long_tail", "After the last token, attention stays on it: a long tail forces EOS.",
        ("long_tail", "forced_eos"), 16, frames, 0,
    )


@scenario
def alignment_repetition(rng):
    frames = speak(rng, 0, 24) + [Frame({p: 0.85}) for p in (3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8)]
    return Scenario(
        "alignment_repetition", "After completion attention returns to early text: repetition forces EOS.",
        ("alignment_repetition", "discontinuity_backward", "forced_eos"), 24, frames, 0,
    )


@scenario
def token_repetition(rng):
    frames = speak(rng, 0, 20) + hold(19, 1)
    return Scenario(
        "token_repetition", "The same speech token twice in a row mid-text: EOS is forced.",
        ("token_repetition", "forced_eos"), 20, frames, 0, repeat_token_at=(30,),
    )


@scenario
def argmax_ties(rng):
    frames = []
    for position in range(0, 20):
        frames += [Frame({position: 0.8})] * 2
        if 0 < position < 19 and position % 3 == 0:
            frames.append(Frame({position: 0.42, position + 1: 0.42}, tie=(position, position + 1)))
    frames += hold(19, 1)
    return Scenario(
        "argmax_ties", "Frames with exactly equal weight on two text tokens: the first index wins.",
        ("argmax_tie", "natural_end"), 20, frames, 0, eos_boost=_end_boost(frames),
    )


@scenario
def bf16_model(rng):
    frames = []
    for position in range(0, 20):
        frames += [Frame({position: 0.8})] * 2
        if position % 2 and position < 19:
            # float32 prefers the second token; bfloat16 rounds both to one value: a tie.
            frames.append(Frame({position: 0.4, position + 1: 0.4}, tie=(position, position + 1), tie_jitter=1e-4))
    frames += hold(19, 1)
    return Scenario(
        "bf16_model", "A bf16 model: attention and logits rounded to bfloat16; rounding creates argmax ties.",
        ("dtype:bfloat16", "argmax_tie", "natural_end"), 20, frames, 0, dtype="bfloat16",
        eos_boost={4: 5.0} | _end_boost(frames),
    )


@scenario
def fp16_model(rng):
    frames = speak(rng, 0, 12) + hold(11, 12, 0.9)
    return Scenario(
        "fp16_model", "A float16 model whose read ends in a long tail.",
        ("dtype:float16", "long_tail", "forced_eos"), 12, frames, 0, dtype="float16",
    )


@scenario
def stall_mid_text(rng):
    frames = speak(rng, 0, 10) + hold(9, 40, 0.8) + speak(rng, 10, 24) + hold(23, 1)
    return Scenario(
        "stall_mid_text", "The read stalls on one token for 40 frames, then resumes and completes.",
        ("stall", "natural_end"), 24, frames, 0, eos_boost=_end_boost(frames),
    )


@scenario
def real_vocab_short(rng):
    frames = speak(rng, 0, 10) + hold(9, 1)
    return Scenario(
        "real_vocab_short", "Chatterbox's real speech vocabulary (8194 logits, EOS 6562, BOS 6561).",
        ("real_vocab", "eos_suppressed", "natural_end"), 10, frames, 0,
        vocab=REAL_VOCAB, bos=REAL_BOS, eos=REAL_EOS, eos_boost={3: 6.0} | _end_boost(frames),
    )
