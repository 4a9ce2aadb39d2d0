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
    scores, errors = score_images(scorer, paths, batch_size=2, workers=3)
    alone = [score_images(scorer, [p], batch_size=1, workers=1)[0][0] for p in paths]
    assert scores[3] is alone[3] is None and all(s is not None for s in scores[:3] + scores[4:])
    assert scores[:3] + scores[4:] == pytest.approx(alone[:3] + alone[4:], rel=1e-12)
    assert len(errors) == 1 and "bad.png: not a readable image" in errors[0]
    assert torch.get_num_threads() == threads  # the decoding threads' one-thread setting stays theirs
