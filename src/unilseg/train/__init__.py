"""Training: BCE + Dice, AdamW, warm-up + cosine, checkpoints, DDP (`python -m unilseg.train`)."""
