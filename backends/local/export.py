"""Export a finished local run: a merged Hugging Face folder, or an Ollama Modelfile.

Public functions (called by the ``export`` command):

    export_merged(run_dir, dest) -> Path          a plain HF folder: merged weights, tokenizer, generation_config
    export_ollama(run_dir, dest, *, temperature=DEFAULT_TEMPERATURE) -> Path    dest/Modelfile
    ollama_modelfile(tokenizer, model_dir, *, temperature=DEFAULT_TEMPERATURE) -> str

The Modelfile's TEMPLATE is Ollama's Go template for the model's own chat format. It is not translated from the
Jinja source (an open-ended language) but chosen from known families (ChatML/Qwen, Llama 3, Mistral, Gemma,
Phi-3) and then *verified*: the family's rendering of probe conversations must equal, character for character,
what the model's Jinja template renders; a model whose template matches no family gets an ``ExportError``
naming the families tried. The stop tokens are the family's end-of-turn markers plus the tokenizer's EOS and
the generation config's EOS ids: a model that was never told to stop at its end-of-turn token runs on.

FROM points at the merged safetensors folder, which Ollama imports for the architectures it supports. Other
architectures need a GGUF file first (llama.cpp's ``convert_hf_to_gguf.py``); ftbroker does not convert.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from ftbroker import progress
from ftbroker.backends.local.config import CONFIG_NAME, load_config
from ftbroker.backends.local.outputs import OUTPUT_DIR
from ftbroker.errors import FtBrokerError, InputError

# Ollama's own default is 0.8. A fine-tune concentrates probability on the trained answer format; sampling far
# into the tail undoes that. Model makers recommend low values for tuned instruct models (Mistral: 0.3 for
# Mistral-Nemo-Instruct-2407, model card; BSC ALIA-40b-instruct: 0-0.2), and a value above 0 avoids the
# repetition loops of pure greedy decoding.
DEFAULT_TEMPERATURE = 0.2


class ExportError(FtBrokerError):
    """The run cannot be exported in the asked format (the message says what is not supported)."""


@dataclass(frozen=True)
class ChatFormat:
    """A chat format as literal pieces: every turn is prefix + content + suffix."""

    family: str
    markers: tuple[str, ...]                # all appear in a template of this family (for error messages)
    turns: Mapping[str, tuple[str, str]]    # role -> (prefix, suffix)
    generation_prompt: str                  # what opens the assistant's reply
    stops: tuple[str, ...]
    system: str = "turn"                    # "turn" | "first_user" | "last_user" (folded in) | "none"
    system_join: str = "\n\n"
    system_preamble: str = ""               # printed before the system text (Llama 3.1's date lines)
    default_system: str | None = None       # the system text used when the conversation has none

    def render(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt this format gives a conversation that ends with a user turn (generation prompt added)."""
        system = next((m["content"] for m in messages if m["role"] == "system"), self.default_system)
        turns = [m for m in messages if m["role"] != "system"]
        text = ""
        if self.system == "turn" and system is not None:
            prefix, suffix = self.turns["system"]
            text += prefix + self.system_preamble + system + suffix
        target = self._fold_target(turns)
        for index, message in enumerate(turns):
            prefix, suffix = self.turns[message["role"]]
            content = message["content"]
            if index == target and system is not None:
                content = system + self.system_join + content
            text += prefix + content + suffix
        return text + self.generation_prompt

    def _fold_target(self, turns) -> int | None:
        users = [i for i, m in enumerate(turns) if m["role"] == "user"]
        if not users or self.system not in ("first_user", "last_user"):
            return None
        return users[0] if self.system == "first_user" else users[-1]

    def go_template(self) -> str:
        """The same rendering as an Ollama (Go text/template) TEMPLATE over ``.Messages``."""
        def q(piece: str) -> str:  # a JSON string literal is a valid Go string literal
            return json.dumps(piece)

        def lit(piece: str) -> str:
            return f"{{{{ {q(piece)} }}}}" if piece else ""

        default = self.default_system
        has_default = "true" if default is not None else "false"
        collect = '{{- range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}{{ $hasSystem = true }}'
        lines = [f"{{{{- $system := {q(default or '')} }}}}{{{{- $hasSystem := {has_default} }}}}",
                 collect + "{{ end }}{{ end }}"]
        fold = ""
        if self.system == "turn":
            prefix, suffix = self.turns["system"]
            lines.append(f"{{{{- if $hasSystem }}}}{lit(prefix + self.system_preamble)}{{{{ $system }}}}"
                         f"{lit(suffix)}{{{{ end }}}}")
        elif self.system in ("first_user", "last_user"):
            assign = ("{{ if eq $target -1 }}{{ $target = $i }}{{ end }}" if self.system == "first_user"
                      else "{{ $target = $i }}")
            lines.append('{{- $target := -1 }}{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}'
                         f"{assign}{{{{ end }}}}{{{{ end }}}}")
            fold = f"{{{{ if and $hasSystem (eq $i $target) }}}}{{{{ $system }}}}{lit(self.system_join)}{{{{ end }}}}"
        lines.append("{{- range $i, $m := .Messages }}")
        lines.append("{{- $last := eq (len (slice $.Messages $i)) 1 }}")
        branches = []
        for role, (prefix, suffix) in self.turns.items():
            if role == "system":
                continue
            content = (fold if role == "user" else "") + "{{ $m.Content }}"
            closing = f"{{{{ if not $last }}}}{lit(suffix)}{{{{ end }}}}" if role == "assistant" else lit(suffix)
            keyword = "if" if not branches else "else if"
            branches.append(f'{{{{- {keyword} eq $m.Role "{role}" }}}}{lit(prefix)}{content}{closing}')
        lines.extend(branches)
        lines.append("{{- end }}")
        if self.generation_prompt:
            lines.append(f'{{{{- if and $last (ne $m.Role "assistant") }}}}{lit(self.generation_prompt)}{{{{ end }}}}')
        lines.append("{{- end }}")
        return "\n".join(lines)


def _chatml(role_open: str, role_close: str, end: str) -> dict[str, tuple[str, str]]:
    return {role: (f"{role_open}{role}{role_close}", end) for role in ("system", "user", "assistant", "tool")}


# Each family lists its variants; the first that reproduces the model's template wins.
FORMATS: tuple[ChatFormat, ...] = (
    ChatFormat("ChatML/Qwen", ("<|im_start|>", "<|im_end|>"), _chatml("<|im_start|>", "\n", "<|im_end|>\n"),
               "<|im_start|>assistant\n", ("<|im_end|>", "<|im_start|>")),
    ChatFormat("ChatML/Qwen", ("<|im_start|>", "<|im_sep|>"),  # Phi-4
               _chatml("<|im_start|>", "<|im_sep|>", "<|im_end|>"), "<|im_start|>assistant<|im_sep|>",
               ("<|im_end|>", "<|im_start|>")),
    ChatFormat("Llama 3", ("<|start_header_id|>", "<|eot_id|>"),
               {role: (f"<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>")
                for role in ("system", "user", "assistant")},
               "<|start_header_id|>assistant<|end_header_id|>\n\n",
               ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>")),
    ChatFormat("Mistral", ("[INST]", "[/INST]"), {"user": ("[INST] ", " [/INST]"), "assistant": ("", "</s>")},
               "", ("</s>", "[INST]")),
    ChatFormat("Mistral", ("[INST]", "[/INST]"), {"user": ("[INST]", "[/INST]"), "assistant": ("", "</s>")},
               "", ("</s>", "[INST]")),
    ChatFormat("Gemma", ("<start_of_turn>", "<end_of_turn>"),
               {"user": ("<start_of_turn>user\n", "<end_of_turn>\n"),
                "assistant": ("<start_of_turn>model\n", "<end_of_turn>\n")},
               "<start_of_turn>model\n", ("<end_of_turn>",)),
    ChatFormat("Phi-3", ("<|user|>", "<|assistant|>", "<|end|>"),
               {role: (f"<|{role}|>\n", "<|end|>\n") for role in ("system", "user", "assistant")},
               "<|assistant|>\n", ("<|end|>", "<|user|>", "<|assistant|>")),
)
FAMILIES = tuple(dict.fromkeys(f.family for f in FORMATS))

_SYSTEM = "You answer in one word."
_PROBES = (
    [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "What is the code of india?"},
     {"role": "assistant", "content": "IN5"}, {"role": "user", "content": "And of peru?"}],
    [{"role": "user", "content": "What is the code of india?"}, {"role": "assistant", "content": "IN5"},
     {"role": "user", "content": "And of peru?"}],
)


def chat_format(tokenizer) -> ChatFormat:
    """The known format that reproduces ``tokenizer``'s chat template exactly; ``ExportError`` if none does."""
    template = tokenizer.chat_template
    if not template:
        raise ExportError("the tokenizer has no chat template, so there is no prompt format to give Ollama")
    expected = [_render_reference(tokenizer, probe) for probe in _PROBES]
    for base in FORMATS:
        for candidate in _variants(base, expected):
            if [candidate.render(probe) if text is not None else None
                    for probe, text in zip(_PROBES, expected, strict=True)] == expected:
                return candidate
    lookalikes = dict.fromkeys(f.family for f in FORMATS if all(marker in template for marker in f.markers))
    detail = (f"it looks like {' / '.join(lookalikes)} but renders differently from every variant ftbroker "
              "knows") if lookalikes else "it matches none of them"
    raise ExportError(f"cannot translate this chat template to an Ollama TEMPLATE: supported families are "
                      f"{', '.join(FAMILIES)}, and {detail}. Write the TEMPLATE by hand, or use --format merged.")


def _render_reference(tokenizer, messages) -> str | None:
    """The model's own rendering, without the BOS text (Ollama's tokenizer adds BOS itself); None when the
    template refuses the conversation (e.g. Gemma 2 raises on a system message)."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - jinja's raise_exception() gives a plain TemplateError or ValueError
        return None
    bos = tokenizer.bos_token
    return text[len(bos):] if bos and text.startswith(bos) else text


def _variants(base: ChatFormat, expected: list[str | None]):
    """The base format with each way of placing the system text, with preamble and default system taken
    from the model's own rendering when it has a system turn."""
    for mode in ("turn", "first_user", "last_user", "none"):
        if mode == "turn" and "system" not in base.turns:
            continue
        candidate = replace(base, system=mode)
        if mode == "turn":
            candidate = _with_system_text(candidate, expected)
        yield candidate


def _with_system_text(fmt: ChatFormat, expected: list[str | None]) -> ChatFormat:
    prefix, suffix = fmt.turns["system"]
    with_system, without_system = expected
    preamble = ""
    if with_system and with_system.startswith(prefix) and (cut := with_system.find(_SYSTEM + suffix)) > 0:
        preamble = with_system[len(prefix):cut]
    default = None
    if without_system and without_system.startswith(prefix + preamble) and suffix in without_system:
        default = without_system[len(prefix + preamble):without_system.index(suffix, len(prefix + preamble))]
    return replace(fmt, system_preamble=preamble, default_system=default)


def stop_strings(tokenizer, fmt: ChatFormat | None = None) -> list[str]:
    """End-of-turn markers of the format, plus EOS: every string at which generation must stop."""
    stops = list(fmt.stops) if fmt else []
    if tokenizer.eos_token:
        stops.append(tokenizer.eos_token)
    return list(dict.fromkeys(stops))


def _known_format(tokenizer) -> ChatFormat | None:
    try:
        return chat_format(tokenizer)
    except ExportError:
        return None


def served_stops(tokenizer) -> list[str]:
    """The stop strings a served model stops at: its chat format's end-of-turn markers (when the template is of a
    known family) and EOS. ``ftbroker eval`` generates with the same."""
    return stop_strings(tokenizer, _known_format(tokenizer))


def stop_token_ids(tokenizer) -> list[int]:
    """The ids of the stop strings that are one token each (what ``generate()`` can stop at)."""
    ids: list[int] = []
    for text in served_stops(tokenizer):
        token_id = tokenizer.convert_tokens_to_ids(text)
        if token_id is not None and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids


def set_stop_tokens(model_dir: Path, tokenizer) -> list[int]:
    """Write generation_config.json's eos_token_id as every stop string that is one token (EOS and the
    end-of-turn markers), so ``generate()`` and servers reading it stop at the end of the turn."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        config = GenerationConfig()
    existing = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    ids = [i for i in existing if i is not None]
    ids += [i for i in stop_token_ids(tokenizer) if i not in ids]
    config.eos_token_id = ids
    if config.pad_token_id is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    config.save_pretrained(model_dir)
    return ids


def merge_adapter(base_model: str, adapter_dir: Path, dest: Path) -> Path:
    """Merge a LoRA adapter into its base model, loaded unquantized in its saved dtype (a QLoRA adapter too:
    merging into the 4-bit weights would round the result), and save model + tokenizer as the new folder
    ``dest`` (absent or empty)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with new_folder(dest) as work, progress.task(f"merging the adapter into {base_model}", total=3,
                                                 unit="steps") as merging:
        merging.update(stage="loading the base model")
        base = AutoModelForCausalLM.from_pretrained(base_model, dtype="auto")
        merging.update(completed=1, stage="merging")
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        merging.update(completed=2, stage=f"writing {dest}")
        merged.save_pretrained(work)
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
        tokenizer.save_pretrained(work)
        set_stop_tokens(work, tokenizer)
        merging.update(completed=3)
    return dest


def _run_output(run_dir: Path) -> tuple[str, Path, str]:
    """(base model, trained output folder, method) of a finished run."""
    config = load_config(run_dir / CONFIG_NAME)
    output = run_dir / OUTPUT_DIR / ("adapter" if config.uses_adapter else "model")
    if not output.is_dir():
        raise InputError(f"{run_dir} has no trained output ({output} is missing): the run has not finished")
    return config.model, output, config.method


@contextmanager
def new_folder(dest: Path) -> Iterator[Path]:
    """A folder to build ``dest`` in: made by ftbroker beside it under a name of its own (nothing of the user's
    is ever in it, or removed), renamed to ``dest`` once complete (``dest`` may be an empty folder: the rename
    replaces it at once), removed if anything fails. It takes the permissions any new folder of the user gets."""
    dest = Path(dest).absolute()
    _check_empty(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.ftbroker-"))
    except OSError as exc:
        raise InputError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    try:
        yield work
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(work, 0o777 & ~umask)  # mkdtemp's are private (0700)
        try:
            os.rename(work, dest)
        except OSError as exc:  # something appeared at dest meanwhile
            raise InputError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)  # ours; gone already when renamed


def _check_empty(dest: Path) -> None:
    if dest.is_dir() and any(dest.iterdir()):
        raise InputError(f"{dest} already exists and is not empty")
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest} already exists and is not a folder")


def export_merged(run_dir: str | Path, dest: str | Path) -> Path:
    """A plain Hugging Face folder at ``dest``: merged weights, tokenizer, and a generation_config whose
    eos_token_id lists the end-of-turn tokens. Returns ``dest``."""
    run_dir, dest = Path(run_dir), Path(dest)
    _check_empty(dest.absolute())
    base, output, method = _run_output(run_dir)
    merged = run_dir / OUTPUT_DIR / "merged"
    source = output if method == "full" else merged if merged.is_dir() else None
    if source is None:
        return merge_adapter(base, output, dest)
    from transformers import AutoTokenizer

    with new_folder(dest) as work:
        shutil.copytree(source, work, dirs_exist_ok=True)
        set_stop_tokens(work, AutoTokenizer.from_pretrained(work))
    return dest


def ollama_modelfile(tokenizer, model_dir: Path, *, temperature: float = DEFAULT_TEMPERATURE) -> str:
    fmt = chat_format(tokenizer)
    template = fmt.go_template()
    if '"""' in template:
        raise ExportError('the chat format contains """, which a Modelfile TEMPLATE cannot hold')
    lines = [
        f"# Written by ftbroker export. Chat format: {fmt.family} (verified against the model's chat template).",
        "# Ollama imports a safetensors folder for the architectures it supports; for others, convert it to GGUF",
        "# with llama.cpp's convert_hf_to_gguf.py and point FROM at the .gguf file.",
        f"FROM {Path(model_dir).resolve()}",
        f'TEMPLATE """{template}"""',
        *(f"PARAMETER stop {json.dumps(stop)}" for stop in stop_strings(tokenizer, fmt)),
        f"PARAMETER temperature {temperature:g}",
    ]
    return "\n".join(lines) + "\n"


def export_ollama(run_dir: str | Path, dest: str | Path, *, temperature: float = DEFAULT_TEMPERATURE) -> Path:
    """``dest/Modelfile`` with FROM at a merged HF folder (the run's own, or one merged into ``dest/model``).
    The chat format is checked before anything is merged. Returns the Modelfile's path."""
    from transformers import AutoTokenizer

    run_dir, dest = Path(run_dir), Path(dest)
    _check_empty(dest.absolute())
    base, output, method = _run_output(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(output)
    chat_format(tokenizer)  # fail before a long merge
    merged = run_dir / OUTPUT_DIR / "merged"
    model_dir = output if method == "full" else merged if merged.is_dir() else None
    with new_folder(dest) as work:
        if model_dir is None:
            merge_adapter(base, output, work / "model")
            model_dir = dest / "model"  # where it will be once the folder is in place
        (work / "Modelfile").write_text(ollama_modelfile(tokenizer, model_dir, temperature=temperature),
                                        encoding="utf-8")
    return dest / "Modelfile"
