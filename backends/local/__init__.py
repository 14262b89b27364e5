"""The local backend: training on this machine's GPU (or CPU) with transformers, peft and trl."""
