"""pipeline/scoring.py: images scored in batches while the next ones decode, each as it scores alone."""


import numpy as np
import pytest
import torch
from PIL import Image


def test_predict_batches_score_each_image_as_it_scores_alone(tmp_path):
    """Pictures of other shapes land in one reused batch array, decoded ahead in threads: each score
    is the one the image gets alone, in order, with an unreadable image in the middle."""
    from artrank import Scorer, score_images

    rng = np.random.default_rng(2)
    paths = []
    for i, size in enumerate([(90, 30), (30, 90), (60, 60), (90, 31), (17, 90), (70, 40), (40, 70)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    paths.insert(3, str(tmp_path / "bad.png"))
    weights = rng.normal(size=3 * 56 * 56)
    scorer = Scorer(score=lambda pixels: pixels.reshape(len(pixels), -1).astype(np.float64) @ weights,
                    image_size=56, patch_size=14, calibration=None, description="linear in every value")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # not the decoding threads' one (the tests run with one thread)
    try:
        scores, errors = score_images(scorer, paths, batch_size=2, workers=3)
        assert torch.get_num_threads() == 2  # the decoding threads' one-thread setting stays theirs
    finally:
        torch.set_num_threads(threads)
    alone = [score_images(scorer, [p], batch_size=1, workers=1)[0][0] for p in paths]
    assert scores[3] is alone[3] is None and all(s is not None for s in scores[:3] + scores[4:])
    assert scores[:3] + scores[4:] == pytest.approx(alone[:3] + alone[4:], rel=1e-12)
    assert len(errors) == 1 and "bad.png: not a readable image" in errors[0]


def brightness_scorer(calibration=None):
    """A Scorer whose score is the mean of the normalised pixels: a brighter picture scores higher."""
    from artrank import Scorer

    return Scorer(score=lambda pixels: pixels.reshape(len(pixels), -1).mean(axis=1), image_size=28, patch_size=14,
                  calibration=calibration, description="mean pixel")


def grey_images(tmp_path, levels) -> list[str]:
    paths = []
    for level in levels:
        paths.append(str(tmp_path / f"grey{level:03d}.png"))
        Image.new("RGB", (30, 20), (level, level, level)).save(paths[-1])
    return paths


def test_top_n_prints_the_n_best_and_the_n_worst_in_score_order(tmp_path, capsys):
    import predict

    levels = [40, 200, 120, 10, 250, 90, 160, 70]
    paths = grey_images(tmp_path, levels)
    predict.rank(brightness_scorer(), [(p, p) for p in paths], batch_size=3, top=2, out=None)
    shown = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:5]]
    by_level = [p for _, p in sorted(zip(levels, paths), reverse=True)]
    assert shown == by_level[:2] + by_level[-2:]


def test_compare_gives_each_image_the_hint_of_its_own_score(tmp_path, capsys):
    import predict

    dark, bright = grey_images(tmp_path, [20, 235])
    low, high = brightness_scorer().score(np.stack([pixels_of(dark), pixels_of(bright)]))
    # cut points that hint the bright picture A and the dark one B
    calibration = dict(slope=1.0, pairs=1, tier_cuts=[dict(above="S", below="A", threshold=high + 1),
                                                      dict(above="A", below="B", threshold=(low + high) / 2),
                                                      dict(above="B", below="C", threshold=low - 1)])
    predict.compare(brightness_scorer(calibration), dark, bright)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [f"A {low:+.4f}  tier hint B  {dark}", f"B {high:+.4f}  tier hint A  {bright}",
                         "B is better"]


def pixels_of(path: str) -> np.ndarray:
    from pipeline.images import open_image, preprocess

    return preprocess(open_image(path), 28, 14).numpy()


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK"])
def test_a_pil_image_scores_as_its_file_does(tmp_path, mode):
    """A PIL image of any mode is turned into RGB (white paper under transparency) as a file is."""
    from artrank import Ranker

    rng = np.random.default_rng(5)
    rgba = Image.fromarray(rng.integers(0, 256, (24, 36, 4), dtype=np.uint8), "RGBA")
    image = rgba if mode == "RGBA" else rgba.convert("RGB").convert(mode)
    path = tmp_path / ("image.tif" if mode == "CMYK" else "image.png")
    image.save(path)
    ranker = Ranker(brightness_scorer())
    assert ranker.score(image) == ranker.score(str(path))
