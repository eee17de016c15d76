"""Model-trace fixtures: what the PyTorch T3 did, stage by stage, on one text and voice.

Format v1 extended (see fixtures/README.md): a model trace is an analyzer trace (same keys,
so the analyzer replay runs on it unchanged: attention in, CFG logits in, analyzed logits
out, state, result, margins) plus the model's own stages: both CFG rows' raw logits, the
processed logits, the sampler's uniform draw and the token, and what produced it (text,
voice, model weights' sha256, settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fixtures import (
    FIXTURES_DIR,
    AnalyzerTrace,
    FixtureError,
    TraceConfig,
    TraceStep,
    load_pair,
    trace_from,
    write_pair,
)
from .inference import Generation, StepRecord

MODEL_TRACES_DIR = FIXTURES_DIR / "model"
MODEL_TRACE_SCHEMA = "chatterbox-parity/model-trace"


@dataclass
class ModelTrace:
    analyzer: AnalyzerTrace  # name, description, config, per-step analyzer data
    text: str
    text_tokens: list[int]
    voice: str
    model: dict  # {"name", "sha256"} of the weights file
    settings: dict
    tokens: list[int]  # the token chosen at each step
    uniforms: list  # the shared sampler's draw at each step (None if none)
    logits_raw: np.ndarray  # (N, 2, V)
    logits_processed: np.ndarray  # (N, V)

    @property
    def name(self) -> str:
        return self.analyzer.name

    def generation_settings(self):
        """The settings the recording ran with."""
        from .inference import GenerationSettings
        from .processors import ProcessorSettings

        s = self.settings
        return GenerationSettings(cfg_weight=s["cfg_weight"], processors=ProcessorSettings(**s["processors"]),
                                  max_new_tokens=s["max_new_tokens"], seed=s["seed"], sampler=s["sampler"])

    def __len__(self) -> int:
        return len(self.tokens)

    def step(self, k: int) -> StepRecord:
        """Step k as the loops record it, for comparing a run with the recording."""
        a, step = self.analyzer, self.analyzer.steps[k]
        return StepRecord(
            attns=a.attns[k], logits_raw=self.logits_raw[k], logits_cfg=a.logits_in[k : k + 1],
            logits_analyzed=a.logits_out[k : k + 1], logits_processed=self.logits_processed[k : k + 1],
            prev_token=step.prev_token, u=self.uniforms[k], token=self.tokens[k],
            state=step.state, result=step.result, margins=step.margins,
        )

    def document(self) -> dict:
        document = self.analyzer.document()
        document["schema"] = MODEL_TRACE_SCHEMA
        for step, token, u in zip(document["steps"], self.tokens, self.uniforms):
            step["token"], step["u"] = token, u
        document.update(text=self.text, text_tokens=self.text_tokens, voice=self.voice, model=self.model,
                        settings=self.settings)
        return document

    def tensors(self) -> dict[str, np.ndarray]:
        tensors = self.analyzer.tensors()
        tensors["logits_raw"] = np.ascontiguousarray(self.logits_raw, dtype=np.float32)
        tensors["logits_processed"] = np.ascontiguousarray(self.logits_processed, dtype=np.float32)
        return tensors


def trace_from_generation(name: str, description: str, generation: Generation, alignment: np.ndarray, *,
                          text: str, text_tokens: list[int], voice: str, model: dict, settings: dict,
                          eos_idx: int, covers=(), provenance=None) -> ModelTrace:
    steps = generation.steps
    rows = np.cumsum([s.attns.shape[1] - (generation.text_tokens_slice[1] if k == 0 else 0) for k, s in enumerate(steps)])
    analyzer = AnalyzerTrace(
        name=name, description=description, covers=list(covers),
        config=TraceConfig(tuple(generation.text_tokens_slice), eos_idx, "float32", int(steps[0].logits_cfg.shape[-1])),
        steps=[TraceStep(s.prev_token, tuple(s.attns.shape), int(r), s.state, s.result, s.margins) for s, r in zip(steps, rows)],
        attns=[s.attns for s in steps],
        logits_in=np.concatenate([s.logits_cfg for s in steps]),
        logits_out=np.concatenate([s.logits_analyzed for s in steps]),
        alignment=alignment, provenance=provenance or {},
    )
    return ModelTrace(
        analyzer=analyzer, text=text, text_tokens=list(text_tokens), voice=voice, model=model, settings=settings,
        tokens=[s.token for s in steps], uniforms=[s.u for s in steps],
        logits_raw=np.stack([s.logits_raw for s in steps]), logits_processed=np.concatenate([s.logits_processed for s in steps]),
    )


def write_model_trace(trace: ModelTrace, directory: Path = MODEL_TRACES_DIR) -> list[Path]:
    return write_pair(directory, trace.name, trace.document(), trace.tensors())


def load_model_trace(name: str, directory: Path = MODEL_TRACES_DIR) -> ModelTrace:
    document, tensors, json_path, tensor_path = load_pair(name, directory, MODEL_TRACE_SCHEMA)
    try:
        analyzer = trace_from(document, tensors, tensor_path)
        n, v = len(analyzer.steps), analyzer.config.vocab_size
        for key, shape in (("logits_raw", (n, 2, v)), ("logits_processed", (n, v))):
            if key not in tensors:
                raise FixtureError(tensor_path, f"missing tensor {key!r}")
            if tensors[key].shape != shape or tensors[key].dtype != np.float32:
                raise FixtureError(tensor_path, f"tensor {key!r} is {tensors[key].dtype}{tensors[key].shape}, expected float32{shape}")
        return ModelTrace(
            analyzer=analyzer, text=document["text"], text_tokens=list(document["text_tokens"]),
            voice=document["voice"], model=dict(document["model"]), settings=dict(document["settings"]),
            tokens=[int(s["token"]) for s in document["steps"]], uniforms=[s["u"] for s in document["steps"]],
            logits_raw=tensors["logits_raw"], logits_processed=tensors["logits_processed"],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise FixtureError(json_path, f"malformed document ({type(e).__name__}: {e})") from None
