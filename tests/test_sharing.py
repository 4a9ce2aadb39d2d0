"""pipeline/sharing.py: the folder uploaded to the model hub, built and checked up to the network; an export loaded
back by its hub id. No test reaches the network: the hub is offline here, and the download is a local copy."""

import shutil

import pytest
import yaml
from conftest import val_images

import artrank
import export_onnx
from pipeline import sharing
from pipeline.errors import ArtrankError


def card_header(path) -> dict:
    return yaml.safe_load(path.read_text().split("---\n")[1])


@pytest.mark.slow
def test_the_upload_folder_holds_the_export_and_the_card_with_license_base_model_and_metrics(exported, tmp_path):
    folder = sharing.upload_folder(exported["out"], tmp_path / "upload", license="mit")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [p.name for p in exported["out"].glob("model*.onnx*")] + ["model.json", "README.md"])
    assert {"model.onnx", "model_fp16.onnx"} <= {p.name for p in folder.iterdir()}
    for name in ("model.onnx", "model.json"):
        assert (folder / name).read_bytes() == (exported["out"] / name).read_bytes()
    header, original = card_header(folder / "README.md"), card_header(exported["out"] / "README.md")
    assert header["license"] == "mit" and header["model-index"] == original["model-index"]
    assert header.get("base_model") == original.get("base_model")  # a hub backbone's id; none for a local one
    test = next(r for r in header["model-index"][0]["results"] if r["dataset"]["split"] == "test")
    assert test["metrics"][0]["type"] == "pairwise_accuracy"


@pytest.mark.slow
def test_an_export_missing_a_file_or_an_unreachable_hub_uploads_nothing(exported, tmp_path, monkeypatch):
    uploads = []
    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", lambda self, **kw: uploads.append(kw))
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, *a, **kw: uploads.append(a))
    partial = tmp_path / "partial"
    shutil.copytree(exported["out"], partial, ignore=shutil.ignore_patterns("model.json", "wandb"))
    with pytest.raises(ArtrankError, match=r"model.json: missing, so nothing is uploaded"):
        sharing.push_export(partial, "someone/drawings", license="mit")
    with pytest.raises(ArtrankError, match="HF_HUB_OFFLINE is set, so the hub is not asked; nothing uploaded"):
        sharing.push_export(exported["out"], "someone/drawings", license="mit")
    before = (exported["out"] / "model.json").stat().st_mtime_ns
    with pytest.raises(SystemExit) as refusal:  # before the export: the hub is asked first
        export_onnx.main([*exported["args"], "--push_to_hub", "someone/drawings"])
    assert str(refusal.value) == ("error: --push_to_hub someone/drawings: HF_HUB_OFFLINE is set, so the hub is not "
                                  "asked; nothing uploaded")
    assert uploads == [] and (exported["out"] / "model.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_artrank_loads_an_export_by_its_hub_id(exported, tmp_path, monkeypatch):
    downloaded = tmp_path / "snapshot"
    folder = sharing.upload_folder(exported["out"], downloaded, license="mit")  # what the hub repository holds
    asked = []
    monkeypatch.setattr("huggingface_hub.snapshot_download",
                        lambda repo_id, allow_patterns: asked.append(repo_id) or str(folder))
    monkeypatch.chdir(tmp_path)
    image = val_images(exported)[0]
    assert artrank.load("someone/drawings").score(image) == artrank.load(exported["out"]).score(image)
    assert asked == ["someone/drawings"]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArtrankError, match="someone/drawings: no such folder or file here, and the export cannot"):
        artrank.load("someone/drawings")
