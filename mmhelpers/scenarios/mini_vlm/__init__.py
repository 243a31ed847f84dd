"""The from-scratch mini VLM: captioning (LM pre-training, then fine-tuning with image grids) and VQA on Sort-of-CLEVR."""
