"""mmhelpers: the multimodal cookbook's helper package.

The reusable core is flat and small, one module per thing (``audio``, ``image``, ``text``, ``encoders``,
``features``, ``fusion``, ``engine``, ``train``, ``classify``, ``splits``, ``metrics``, ``data``...); each
application scenario lives in ``mmhelpers.scenarios.<name>`` and builds on the core only.

The names a recipe needs most are importable from the package itself, loaded on first use::

    from mmhelpers import read_folder, image_features, text_features, fusion_classifier, train_classifier, fit
"""

from importlib import import_module
from typing import Any

from mmhelpers.utils import Timer, get_device, set_seed, set_threads

__version__ = "0.1.0"

# name -> submodule that defines it (imported lazily, so `import mmhelpers` stays cheap)
_LAZY = {
    **dict.fromkeys(
        ("read_folder", "read_table", "read_llava", "load_images", "load_clips", "Records"), "data.folders"
    ),
    **dict.fromkeys(
        ("fusion_classifier", "train_classifier", "predict", "image_features", "text_features"), "classify"
    ),
    **dict.fromkeys(("fit", "FitConfig", "History", "load_checkpoint", "warmup_cosine"), "engine"),
    **dict.fromkeys(("Trainer", "TrainConfig", "TensorDictDataset", "EpochBatches", "OnKey", "OnModalities"), "train"),
    **dict.fromkeys(("build_fusion", "MultimodalClassifier", "FUSION_METHODS"), "fusion"),
    **dict.fromkeys(("build_image_encoder", "build_text_encoder", "AudioCNN", "ImageCNN", "AudioGRU"), "encoders"),
    **dict.fromkeys(("extract_features", "fingerprint"), "features"),
    **dict.fromkeys(("stratified_holdout", "group_holdout", "leave_one_group_out"), "splits"),
    **dict.fromkeys(("accuracy", "macro_f1", "expected_calibration_error"), "metrics"),
    "retrieval_metrics": "retrieval",
    "DataError": "errors",
}
__all__ = ["Timer", "get_device", "set_seed", "set_threads", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"mmhelpers.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmhelpers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
