"""mmhelpers: the multimodal cookbook's helper package.

Submodules are small and named after what they hold: ``data`` (registry, loaders,
embedded defaults), ``audio``, ``image``, ``text`` (representation), ``encoders``,
``features`` (batched, cached extraction), ``attention`` (Transformer maths from
scratch), ``utils`` (seed, device, timer) and ``notebook`` (set-up and metrics).
"""

from mmhelpers.utils import Timer, get_device, set_seed, set_threads

__version__ = "0.1.0"
__all__ = ["Timer", "get_device", "set_seed", "set_threads", "__version__"]
