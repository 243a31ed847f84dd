import numpy as np
import pytest
import torch

from mmhelpers.corruptions import corrupt
from mmhelpers.data.sort_of_clevr import make_scenes, render_images
from mmhelpers.regions import colour_regions, image_regions


def _centroid_errors(labels: torch.Tensor, scenes) -> list[float]:
    """Per object: distance from its true centre to the centroid of the region under it (inf if none)."""
    errs = []
    for lab, scene in zip(labels, scenes, strict=True):
        for _, _, cx, cy in scene.objects:
            k = lab[int(cy), int(cx)].item()
            if k == 0:
                errs.append(float("inf"))
                continue
            ys, xs = torch.nonzero(lab == k, as_tuple=True)
            errs.append(float(np.hypot(xs.float().mean().item() - cx, ys.float().mean().item() - cy)))
    return errs


@pytest.mark.parametrize(
    "corruption",
    [None, ("jpeg", 75), ("colour_shift", 25), ("noise", 8), "antialias"],
)
def test_one_region_per_object_under_corruptions(corruption):
    scenes = make_scenes(40, seed=3)
    if corruption == "antialias":
        images = render_images(scenes, antialias=True)
    else:
        images = render_images(scenes)
        if corruption is not None:
            images = corrupt(images, *corruption, seed=1)
    labels = colour_regions(images)
    assert labels.shape == (40, 64, 64) and labels.dtype == torch.int64
    n_regions = labels.flatten(1).amax(1)
    assert (n_regions == 6).float().mean() >= 0.95  # one region per object, no halos or specks
    errs = _centroid_errors(labels, scenes)
    assert max(errs) < 1.6 and np.mean(errs) < 0.6  # every object found, its centre within a pixel or so


def test_touching_objects_of_two_colours_stay_apart():
    img = np.full((32, 32, 3), 255, np.uint8)
    img[8:20, 4:16] = (255, 0, 0)
    img[8:20, 16:28] = (0, 0, 255)  # touches the red one along a whole edge
    lab = image_regions(img)
    assert lab.max() == 2
    assert lab[14, 8] != lab[14, 24] and lab[14, 8] > 0 and lab[14, 24] > 0


def test_labels_are_ordered_by_area_and_capped():
    img = np.full((64, 64, 3), 255, np.uint8)
    sides = [4, 6, 8, 10, 12]
    x = 2
    for s in sides:
        img[20 : 20 + s, x : x + s] = (0, 128, 0)
        x += s + 2
    lab = image_regions(img, max_regions=3, min_area=1)
    assert lab.max() == 3
    areas = [int((lab == k).sum()) for k in (1, 2, 3)]
    assert areas == sorted(areas, reverse=True)  # largest first; the two smallest squares dropped
    assert lab[25, 2 + 1] == 0


def test_plain_image_has_no_regions_and_bad_input_is_refused():
    assert image_regions(np.full((16, 16, 3), 200, np.uint8)).max() == 0
    with pytest.raises(ValueError, match="uint8 RGB"):
        image_regions(np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        colour_regions(torch.zeros(1, 3, 8, 8))


def test_region_features_say_where_each_object_is_its_shape_and_colour():
    from mmhelpers.data.sort_of_clevr import COLORS, render_scene
    from mmhelpers.regions import REGION_FEATURES, region_features

    scenes = make_scenes(20, seed=5)
    feats = region_features(render_images(scenes), max_regions=8)
    assert feats.shape == (20, 8, len(REGION_FEATURES)) and feats.dtype == torch.float32
    assert torch.equal(feats[..., -1].sum(1), torch.full((20,), 6.0))  # six objects, six rows present ...
    assert feats[:, 6:].abs().sum() == 0  # ... the padding rows all zero
    spreads = {"circle": [], "square": []}
    for scene, rows in zip(scenes, feats, strict=True):
        image = render_scene(scene)
        for _, shape, cx, cy in scene.objects:
            x, y = (cx - 31.5) / 31.5, (cy - 31.5) / 31.5
            k = int(torch.cdist(rows[:6, :2], torch.tensor([[x, y]])).argmin())
            assert abs(rows[k, 0] - x) < 0.05 and abs(rows[k, 1] - y) < 0.05  # its centre, within 1.6 px
            assert torch.allclose(rows[k, 4:7], torch.tensor(image[int(cy), int(cx)] / 255.0).float(), atol=0.02)
            spreads[shape].append(float(rows[k, 3]))
        assert {c for c, *_ in scene.objects} <= set(COLORS)
    assert max(spreads["circle"]) < min(spreads["square"])  # the spread tells a circle from a square


def test_image_region_features_take_any_size_and_grey_and_name_a_bad_image(tmp_path):
    from PIL import Image

    from mmhelpers.regions import image_region_features

    scene = render_images(make_scenes(1, seed=2))[0].permute(1, 2, 0).numpy()
    wide = np.full((64, 128, 3), 255, np.uint8)
    wide[:, 32:96] = scene  # the centre crop is the scene itself
    path = tmp_path / "scene.png"
    Image.fromarray(np.kron(scene, np.ones((2, 2, 1), np.uint8))).save(path)  # the scene at 128 px, from a file
    feats = image_region_features([scene, wide, path, np.zeros((40, 30), np.uint8)], size=64, max_regions=8)
    assert feats.shape == (4, 8, 8)
    assert torch.allclose(feats[0], feats[1]) and torch.allclose(feats[0, :, :2], feats[2, :, :2], atol=0.03)
    assert feats[3].abs().sum() == 0  # a blank image has no regions
    with pytest.raises(ValueError, match="image 1: expected a uint8"):
        image_region_features([scene, scene.astype(np.float32)])
