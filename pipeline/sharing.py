"""An export on the model hub: the folder uploaded (model.onnx, model_fp16.onnx when exported, model.json and
the model card), the upload, and an export loaded back by its hub id.

Nothing is uploaded before the folder is complete and the hub has answered: a missing file or an unreachable
hub stops with one line, and the repository is left as it was.
"""

import re
import shutil
import tempfile
from pathlib import Path

from .errors import ArtrankError
from .scoring import FILE_NAMES

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
# The graph files (an export above 2 GB keeps its weights beside the graph, in model.onnx.data) and model.json.
EXPORT_PATTERNS = ["model.onnx*", "model_fp16.onnx*", "model.json"]


def upload_folder(out: Path, folder: Path, *, license: str) -> Path:
    """The files the hub repository of OUTPUT_DIR's export will hold, copied into `folder`; the model card
    gets the license (its base_model and model-index metrics are train.py's and evaluate.py's)."""
    from huggingface_hub import ModelCard

    out = Path(out)
    for needed, made_by in ((FILE_NAMES["fp32"], "export_onnx.py"), ("model.json", "export_onnx.py"),
                            ("README.md", "train.py (the model card)")):
        if not (out / needed).is_file():
            raise ArtrankError(f"{out / needed}: missing, so nothing is uploaded; {made_by} writes it")
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in EXPORT_PATTERNS:
        for path in sorted(out.glob(pattern)):
            shutil.copy2(path, folder / path.name)
    card = ModelCard((out / "README.md").read_text())
    card.data.license = license
    card.save(folder / "README.md")
    return folder


def check_hub(repo_id: str) -> None:
    """The hub answers and knows who uploads, or ArtrankError in one line: asked before anything is uploaded."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    if not HUB_ID.fullmatch(repo_id):
        raise ArtrankError(f"--push_to_hub {repo_id!r}: a hub repository id is owner/name")
    if constants.HF_HUB_OFFLINE:
        raise ArtrankError(f"--push_to_hub {repo_id}: HF_HUB_OFFLINE is set, so the hub is not asked; nothing uploaded")
    try:
        HfApi().whoami()
    except LocalTokenNotFoundError:
        raise ArtrankError(f"--push_to_hub {repo_id}: not logged in to the hub (hf auth login, or HF_TOKEN); "
                           "nothing uploaded") from None
    except (HfHubHTTPError, OSError) as err:  # no connection, a refused token, a server error
        raise ArtrankError(f"--push_to_hub {repo_id}: the hub cannot be reached or refused the token "
                           f"({type(err).__name__}: {(str(err).splitlines() or [''])[0]}); nothing uploaded") from None


def push_export(out: Path, repo_id: str, *, license: str) -> str:
    """Upload OUTPUT_DIR's export to `repo_id` (created when missing); returns the repository's address."""
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = upload_folder(out, Path(tmp) / "upload", license=license)
        check_hub(repo_id)
        api = HfApi()
        url = api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="artrank export")
    return str(url)


def hub_export(repo_id: str) -> Path:
    """The local copy of a hub repository's export (downloaded once, then read from the hub cache)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=EXPORT_PATTERNS))
    except Exception as err:  # offline without a cached copy, no such repository, a refused download
        raise ArtrankError(f"{repo_id}: no such folder or file here, and the export cannot be fetched from the hub "
                           f"({type(err).__name__}: {(str(err).splitlines() or [''])[0]})") from None
