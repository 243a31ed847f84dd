"""Audio-visual digits: spoken digits (FSDD) paired with handwritten ones (MNIST); protocols and the fusion recipe."""
