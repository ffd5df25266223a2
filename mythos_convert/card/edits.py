"""The card at push time: link the GGUF repository, point the quickstart at the Hub repo, check the front matter.

Each edit changes one marked line or quoted placeholder, so a card edited by hand is left alone.
"""

from __future__ import annotations

from pathlib import Path

from mythos_convert.card.render import CARD_FILE, LOCAL_MODEL_REF
from mythos_convert.support.atomic import atomic_file

REQUIRED_FRONT_MATTER = ("language", "license", "library_name", "pipeline_tag", "tags")


GGUF_REPO_MARKER = "<!-- gguf-repo -->"


def gguf_repo_line(repo_id: str, endpoint: str = "https://huggingface.co") -> str:
    """The main card's link to the repository holding the GGUF files."""
    return (
        f"The GGUF files, with a card of their own, are published in "
        f"[{repo_id}]({endpoint.rstrip('/')}/{repo_id}). {GGUF_REPO_MARKER}"
    )


def link_gguf_repo(folder: str | Path, repo_id: str, endpoint: str = "https://huggingface.co") -> bool:
    """Point the card's GGUF section at `repo_id` (before `push --gguf-repo`); the line that carries
    the marker is replaced, so pushing again to another repo does not leave two links. Returns
    whether the card changed."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    if GGUF_REPO_MARKER not in text:
        return False
    lines = [gguf_repo_line(repo_id, endpoint) if GGUF_REPO_MARKER in line else line for line in text.split("\n")]
    new = "\n".join(lines)
    if new == text:
        return False
    with atomic_file(path) as tmp:
        tmp.write_text(new, encoding="utf-8")
    return True


def point_quickstart_at(folder: str | Path, repo_id: str) -> bool:
    """Make the card's quickstart load `repo_id` instead of the local placeholder (before a push).

    Only the quoted placeholder in the body changes, so a card rendered with `hub_repo` or edited
    by hand is left alone. Returns whether the card changed.
    """
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    placeholder = f'"{LOCAL_MODEL_REF}"'
    if placeholder not in text:
        return False
    with atomic_file(path) as tmp:
        tmp.write_text(text.replace(placeholder, f'"{repo_id}"'), encoding="utf-8")
    return True


def card_problems(text: str) -> list[str]:
    """What is wrong with a card's front matter, checked locally (no network): [] when valid."""
    from huggingface_hub import ModelCard, ModelCardData

    try:
        card = ModelCard(text)
    except Exception as exc:  # huggingface_hub raises ValueError on bad YAML / missing metadata
        return [f"README.md front matter does not parse: {str(exc).splitlines()[0][:160]}"]
    data = card.data.to_dict()
    problems = [f"README.md front matter lacks `{key}`" for key in REQUIRED_FRONT_MATTER if not data.get(key)]
    try:
        again = ModelCardData(**data).to_dict()
    except Exception as exc:
        return [*problems, f"README.md front matter does not round-trip through ModelCardData: {exc}"]
    if again != data:
        problems.append("README.md front matter changes when round-tripped through ModelCardData")
    return problems
