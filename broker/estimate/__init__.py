"""Pure estimation core: memory (VRAM), compute (FLOPs, throughput, time) and cost. No I/O, no clock."""
