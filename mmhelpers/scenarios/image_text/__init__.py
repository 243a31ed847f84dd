"""Image-text retrieval and zero-shot: Flickr8k (or embedded photos), cached grids and hidden states."""
