"""The SkyPilot backend: the local trainer on rented cloud GPUs, launched and looked after by SkyPilot."""
