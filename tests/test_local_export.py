"""Ollama export: the chat format is recognised per family, verified against the model's own Jinja template, and
the generated Go template renders the same prompts (checked with Go's text/template when `go` is installed)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from ftbroker.backends.local import export
from tinymodels import CHATML_TEMPLATE, build_tokenizer

QWEN_LIKE = (  # ChatML with a default system prompt when the conversation has none
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}{%- if m['role'] != 'system' %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA31_LIKE = (  # a system turn always, opened by date lines
    "{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' + system_message + '<|eot_id|>' }}"
    "{%- for m in messages %}{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content']"
    " + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
MISTRAL_LIKE = (  # the system text joins the LAST user turn
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}{%- for m in loop_messages %}{%- if m['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + m['content'] + ' [/INST]' }}"
    "{%- else %}{{- '[INST] ' + m['content'] + ' [/INST]' }}{%- endif %}"
    "{%- elif m['role'] == 'assistant' %}{{- m['content'] + eos_token }}{%- endif %}{%- endfor %}"
)
GEMMA_LIKE = (  # no system role: the system text opens the FIRST user turn
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' %}"
    "{%- set prefix = messages[0]['content'] + '\\n\\n' %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set prefix = '' %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- for m in loop_messages %}{%- set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + m['content'] + '<end_of_turn>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"
)
PHI3_LIKE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)
ALPACA_LIKE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '### Instruction:\\n' + m['content'] + '\\n\\n' }}"
    "{% elif m['role'] == 'assistant' %}{{ '### Response:\\n' + m['content'] + eos_token + '\\n\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
)

FAMILIES = {
    "chatml": (CHATML_TEMPLATE, "ChatML/Qwen", {}),
    "qwen": (QWEN_LIKE, "ChatML/Qwen", {}),
    "llama31": (LLAMA31_LIKE, "Llama 3", {"specials": ("<|finetune_right_pad_id|>", "<|eot_id|>",
                                                       "<|begin_of_text|>", "<|start_header_id|>",
                                                       "<|end_header_id|>", "<|end_of_text|>"),
                                          "eos": "<|eot_id|>", "pad": "<|finetune_right_pad_id|>",
                                          "bos": "<|begin_of_text|>"}),
    "mistral": (MISTRAL_LIKE, "Mistral", {"specials": ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
                                          "eos": "</s>", "pad": "<unk>", "bos": "<s>"}),
    "gemma": (GEMMA_LIKE, "Gemma", {"specials": ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"),
                                    "eos": "<eos>", "pad": "<pad>", "bos": "<bos>"}),
    "phi3": (PHI3_LIKE, "Phi-3", {"specials": ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>",
                                               "<|end|>"), "eos": "<|endoftext|>", "pad": "<|endoftext|>"}),
}

CONVERSATIONS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Code of peru?"},
     {"role": "assistant", "content": "PE4"}, {"role": "user", "content": "And chile?"}],
    [{"role": "user", "content": "Hi\nthere \"you\""}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "Only one turn"}],
]


@pytest.fixture(scope="module")
def tokenizers():
    return {name: build_tokenizer(template, **kwargs) for name, (template, _, kwargs) in FAMILIES.items()}


def reference(tokenizer, messages) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text.removeprefix(tokenizer.bos_token or "\0")


@pytest.mark.parametrize("name", FAMILIES)
def test_family_is_recognised_and_reproduces_the_template(tokenizers, name):
    fmt = export.chat_format(tokenizers[name])
    assert fmt.family == FAMILIES[name][1]
    for messages in CONVERSATIONS:
        assert fmt.render(messages) == reference(tokenizers[name], messages)


def test_what_each_variant_learned(tokenizers):
    assert export.chat_format(tokenizers["qwen"]).default_system == "You are a helpful assistant."
    llama = export.chat_format(tokenizers["llama31"])
    assert llama.system_preamble.startswith("Cutting Knowledge Date") and llama.default_system == ""
    assert export.chat_format(tokenizers["mistral"]).system == "last_user"
    assert export.chat_format(tokenizers["gemma"]).system == "first_user"


def test_unsupported_template_names_the_families(tokenizers):
    alpaca = build_tokenizer(ALPACA_LIKE)
    with pytest.raises(export.ExportError, match="supported families are ChatML/Qwen, Llama 3, Mistral, Gemma, "
                                                 "Phi-3, and it matches none of them"):
        export.chat_format(alpaca)
    odd_chatml = build_tokenizer(CHATML_TEMPLATE.replace("'<|im_start|>' + message['role'] + '\\n'",
                                                         "'<|im_start|>[' + message['role'] + ']\\n'"))
    with pytest.raises(export.ExportError, match="looks like ChatML/Qwen but renders differently"):
        export.chat_format(odd_chatml)


def test_modelfile(tokenizers, tmp_path):
    text = export.ollama_modelfile(tokenizers["llama31"], tmp_path)
    assert f"\nFROM {tmp_path.resolve()}\n" in text
    assert 'TEMPLATE """{{- $system := "" }}' in text
    for stop in ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"):
        assert f'PARAMETER stop "{stop}"\n' in text
    assert text.endswith("PARAMETER temperature 0.2\n")
    assert "<|begin_of_text|>" not in text  # Ollama adds BOS itself


GO_RENDERER = """package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

type Case struct {
	Template string
	Messages []Message
}

func main() {
	var cases []Case
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	out := []string{}
	for _, c := range cases {
		var b strings.Builder
		if err := template.Must(template.New("t").Parse(c.Template)).Execute(&b, map[string]any{"Messages": c.Messages}); err != nil {
			panic(err)
		}
		out = append(out, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""


@pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed: the generated templates are checked "
                                                       "with Go's text/template only where `go` is on PATH")
def test_go_templates_render_what_the_model_was_trained_on(tokenizers, tmp_path):
    cases, expected = [], []
    for name, tokenizer in tokenizers.items():
        template = export.chat_format(tokenizer).go_template()
        for messages in CONVERSATIONS:
            cases.append({"Template": template, "Messages": messages})
            expected.append((name, reference(tokenizer, messages)))
    program = tmp_path / "render.go"
    program.write_text(GO_RENDERER)
    done = subprocess.run(["go", "run", str(program)], check=False, input=json.dumps(cases), capture_output=True, text=True,
                          timeout=120, env={"HOME": str(tmp_path), "GOCACHE": str(tmp_path / "cache"),
                                            "PATH": str(Path(shutil.which("go")).parent), "GO111MODULE": "off"})
    assert done.returncode == 0, done.stderr
    rendered = json.loads(done.stdout)
    assert [(name, text) for (name, _), text in zip(expected, rendered, strict=True)] == expected


# --- the export folder: built beside the destination under a name of ftbroker's own, renamed into place ----------

def test_an_export_folder_appears_whole_or_not_at_all(tmp_path):
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "keep.txt").write_text("the user's")
    (tmp_path / "out").mkdir()  # an empty folder may be the destination
    old = os.umask(0o022)
    try:
        with export.new_folder(tmp_path / "out") as work:
            assert work.parent == tmp_path and work.name.startswith(".out.ftbroker-")
            (work / "Modelfile").write_text("FROM x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "out" / "Modelfile").read_text() == "FROM x\n"
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755  # an export is the user's: the umask's mode
    with pytest.raises(RuntimeError), export.new_folder(tmp_path / "failed") as work:
        (work / "half").write_text("written")
        raise RuntimeError("the merge failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.partial"]  # nothing of ours left
    assert (tmp_path / "out.partial" / "keep.txt").read_text() == "the user's"


def test_an_export_refuses_a_folder_that_is_not_empty_or_cannot_be_written(tmp_path):
    from ftbroker.errors import InputError

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "a-file").write_text("x")
    for dest, words in ((tmp_path / "full", "already exists and is not empty"),
                        (tmp_path / "a-file", "already exists and is not a folder"),
                        (Path("/proc/ftbroker-export"), "cannot write /proc/ftbroker-export")):
        with pytest.raises(InputError, match=words), export.new_folder(dest):
            pass
    assert (tmp_path / "full" / "x").read_text() == "x"


def test_the_libraries_noise_goes_to_the_log_not_the_terminal(tmp_path, capfd):
    """What transformers, bitsandbytes, datasets and tqdm print while a model is merged: in the run folder's
    export.log as DEBUG lines, never on the user's terminal."""
    import logging
    import warnings

    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    from ftbroker.backends.local import noise

    log = tmp_path / "export.log"
    with noise.kept_in(log), warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.getLogger("transformers.modeling_utils").warning("Some weights were not initialized")
        warnings.warn_explicit("bitsandbytes was compiled without GPU support", UserWarning, "bnb.py", 1,
                               module="bitsandbytes.cextension")
        for _ in hf_logging.tqdm(range(3), desc="Loading checkpoint shards"):  # transformers' bar: off
            pass
        for _ in tqdm(range(3), desc="a bare tqdm"):  # drawn, into the log
            pass
        os.write(2, b"a compiled library's own line\n")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    lines = log.read_text().splitlines()
    assert any("DEBUG [transformers.modeling_utils WARNING] Some weights were not initialized" in li for li in lines)
    assert any("DEBUG [py.warnings WARNING]" in li and "compiled without GPU support" in li for li in lines)
    assert "Loading checkpoint shards" not in log.read_text()
    assert "a bare tqdm" in log.read_text() and "a compiled library's own line" in log.read_text()
    logging.getLogger("transformers.modeling_utils").warning("after the export")  # everything is put back
    assert "after the export" not in log.read_text()
