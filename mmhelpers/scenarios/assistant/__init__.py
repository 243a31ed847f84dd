"""A small LLaVA-style assistant on a pretrained language model (SmolLM2-135M-Instruct): chat format and loss mask so far."""
