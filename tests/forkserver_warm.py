"""Preloaded by the forkserver of test_concurrency.py, never imported by a test: loads once what each command would
load on first use (the tokenizer an OpenAI job is counted with), for every process forked from it to inherit."""

import quicktok

quicktok.get_encoding("o200k_base")
