"""Generation with a local job's models: the base model, and the fine-tuned one (its adapter on the same base, or the
fully fine-tuned weights), loaded once from the run folder.

Served settings: greedy decoding (a fine-tune concentrates probability on the trained answer; ``ftbroker export``
serves it at temperature 0.2, and greedy is that setting's deterministic limit), stopping at the chat format's
end-of-turn markers and EOS exactly as an exported model does (``export.served_stops`` / ``stop_token_ids``).
Prompts are rendered the way the trainer rendered them: the tokenizer's chat template with the generation prompt
(chat and preference lines), the raw prompt with special tokens (prompt/completion lines).

transformers generates in batches (left-padded). vLLM is used instead when it is installed and torch sees a CUDA
GPU; the adapter is then served through vLLM's LoRA support. A QLoRA adapter is evaluated on the unquantized base,
as ``ftbroker export`` merges it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftbroker.errors import ExtraNotInstalledError, InputError
from ftbroker.evaluation.records import Answer, Example

BATCH = 16


def _stamp(folder: Path) -> str:
    """What changes when the weights in ``folder`` do (names, sizes, times): part of the generation cache key."""
    files = sorted(p for p in folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    text = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LocalModels:
    """Both models of a finished local run. ``side`` is "base" or "tuned" throughout."""

    def __init__(self, run_dir: Path):
        from ftbroker.backends.local.config import load_config

        for package in ("torch", "transformers", "peft"):
            if importlib.util.find_spec(package) is None:
                raise ExtraNotInstalledError(package, "local", "evaluating a local job")
        self.config = load_config(run_dir / "config.json")
        self.output = run_dir / "output" / ("adapter" if self.config.uses_adapter else "model")
        if not self.output.is_dir():
            raise InputError(f"{run_dir} has no trained output ({self.output} is missing)")
        self._loaded: dict[str, Any] = {}

    # --- what the flow asks ---

    def name(self, side: str) -> str:
        return self.config.model if side == "base" else str(self.output)

    def identity(self, side: str) -> str:
        base = Path(self.config.model)
        stamp = _stamp(base) if base.is_dir() else "hub"
        return f"local:{self.config.model}@{stamp}" + ("" if side == "base" else f"+{self.output}@{_stamp(self.output)}")

    def settings(self, max_new_tokens: int) -> dict[str, Any]:
        return {"decoding": "greedy", "max_new_tokens": max_new_tokens, "stops": self.stops,
                "engine": "vllm" if self._vllm() else "transformers"}

    @property
    def tokenizer(self):
        if "tokenizer" not in self._loaded:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.output)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "left"
            self._loaded["tokenizer"] = tokenizer
        return self._loaded["tokenizer"]

    @property
    def stops(self) -> list[str]:
        from ftbroker.backends.local.export import served_stops

        return served_stops(self.tokenizer)

    def reference(self, example: Example) -> Answer:
        """The reference as the model was trained to write it: a reply with tool calls is compared with what the
        chat template renders for that turn (a local model answers in text)."""
        if example.fmt != "chat" or not example.reference.tool_calls:
            return example.reference
        from ftbroker.backends.local.masking import chat_spans

        last = next(m for m in reversed(example.line["messages"]) if m.get("role") == "assistant")
        messages = [*example.messages, last]
        text, spans = chat_spans(self.tokenizer, messages, list(example.tools) or None)
        rendered = text[spans[-1][0]:spans[-1][1]] if spans else ""
        return Answer(_cut(rendered, self.stops).strip())

    def generate(self, side: str, examples: Sequence[Example], max_new_tokens: int) -> list[Answer]:
        prompts = [self._prompt_ids(e) for e in examples]
        if self._vllm():  # pragma: no cover - needs vLLM and a CUDA GPU
            return self._generate_vllm(side, prompts, max_new_tokens)
        answers: list[Answer] = []
        for start in range(0, len(prompts), BATCH):
            answers += self._generate_batch(side, prompts[start:start + BATCH], max_new_tokens)
        return answers

    # --- transformers ---

    def _prompt_ids(self, example: Example) -> list[int]:
        from ftbroker.backends.local.masking import normalize_messages

        tokenizer = self.tokenizer
        if example.prompt_text is not None:
            return list(tokenizer(example.prompt_text, add_special_tokens=True)["input_ids"])
        if not tokenizer.chat_template:
            raise InputError(f"{self.output}: the tokenizer has no chat template to render chat examples with")
        text = tokenizer.apply_chat_template(normalize_messages(example.messages), tools=list(example.tools) or None,
                                             tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _model(self, side: str):
        """The model that answers for ``side``: for an adapter, one PEFT model serves both (adapter off for base)."""
        key = "tuned" if self.config.uses_adapter else side
        if key not in self._loaded:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM

            transformers.logging.set_verbosity_error()  # load reports and progress bars: not the user's business
            transformers.utils.logging.disable_progress_bar()

            dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
            device = "cuda" if torch.cuda.is_available() else "cpu"
            if self.config.uses_adapter:
                from peft import PeftModel

                base = AutoModelForCausalLM.from_pretrained(self.config.model, dtype=dtype)
                model = PeftModel.from_pretrained(base, str(self.output))
            else:
                model = AutoModelForCausalLM.from_pretrained(self.name(side), dtype=dtype)
            self._loaded[key] = model.to(device).eval()
        return self._loaded[key]

    def _generate_batch(self, side: str, prompts: list[list[int]], max_new_tokens: int) -> list[Answer]:
        import contextlib

        import torch

        from ftbroker.backends.local.export import stop_token_ids

        tokenizer, model = self.tokenizer, self._model(side)
        width = max(len(p) for p in prompts)
        room = getattr(model.config, "max_position_embeddings", None)
        if room is not None:  # a model cannot write past its context
            max_new_tokens = max(1, min(max_new_tokens, room - width))
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
        off = model.disable_adapter() if self.config.uses_adapter and side == "base" else contextlib.nullcontext()
        with torch.no_grad(), off:
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=stop_token_ids(tokenizer), pad_token_id=pad)
        stop_ids = set(stop_token_ids(tokenizer))
        answers = []
        for prompt, row in zip(prompts, out[:, width:].tolist(), strict=True):
            stop = next((i for i, token in enumerate(row) if token in stop_ids), None)
            used = len(row) if stop is None else stop + 1
            text = _cut(tokenizer.decode(row[:used], skip_special_tokens=False), self.stops).strip()
            answers.append(Answer(text, input_tokens=len(prompt), output_tokens=used,
                                  finish="length" if stop is None else "stop"))
        return answers

    # --- vLLM ---

    def _vllm(self) -> bool:
        if importlib.util.find_spec("vllm") is None:
            return False
        import torch

        return torch.cuda.is_available()

    def _generate_vllm(self, side: str, prompts: list[list[int]], max_new_tokens: int
                       ) -> list[Answer]:  # pragma: no cover - needs vLLM and a CUDA GPU
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        adapter = self.config.uses_adapter
        key = "vllm" if adapter else f"vllm-{side}"  # one engine serves both sides of an adapter
        if key not in self._loaded:
            self._loaded[key] = LLM(model=self.config.model if adapter else self.name(side), enable_lora=adapter,
                                    tokenizer=str(self.output))
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=self.stops)
        lora = LoRARequest("tuned", 1, str(self.output)) if adapter and side == "tuned" else None
        outputs = self._loaded[key].generate([{"prompt_token_ids": p} for p in prompts], params, lora_request=lora)
        return [Answer(o.outputs[0].text.strip(), input_tokens=len(p), output_tokens=len(o.outputs[0].token_ids),
                       finish=o.outputs[0].finish_reason) for p, o in zip(prompts, outputs, strict=True)]


def _cut(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first stop string."""
    ends = [text.find(s) for s in stops if s and s in text]
    return text[:min(ends)] if ends else text
