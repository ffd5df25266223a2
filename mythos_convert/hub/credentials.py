"""Refusing to publish credentials: a file holding a token or private key is never uploaded.

What a credential looks like (a Hugging Face token, a private key, cloud keys) is matched in every
text file and small binary a push takes, whatever its name, and a file named like a credential
store is refused by its name. The token the push itself uses is looked for too.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path

from mythos_convert.errors import MythosError

# What a credential looks like: a Hugging Face token, a private key, cloud keys. A file holding one
# is never uploaded, whatever its name; so is a file named like a credential store.
_SECRET = re.compile(
    rb"hf_[A-Za-z0-9]{30,}|api_org_[A-Za-z0-9]{30,}|-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}"
)
_SECRET_NAMES = re.compile(
    r"(^|/)(token|stored_tokens|\.?netrc|\.?git-credentials|credentials(\.\w+)?|id_(rsa|ed25519|ecdsa))$"
)
_SCAN_LIMIT = 16 * 1024 * 1024  # text files and small binaries are scanned whole; weights are not
_WEIGHTS = ("*.safetensors", "*.gguf", "*.bin", "*.pt", "*.pth")


def credential_problem(folder: Path, rel: str, token: str | None = None) -> str | None:
    """Why `rel` looks like credentials (None: it does not). Weights (LFS by pattern) are not scanned."""
    if _SECRET_NAMES.search(rel):
        return f"{rel} is named like a credentials file"
    path = folder / rel
    if path.stat().st_size > _SCAN_LIMIT or any(fnmatch.fnmatch(rel.rsplit("/", 1)[-1], p) for p in _WEIGHTS):
        return None
    if holds_secret(path.read_bytes(), token):
        return f"{rel} contains what looks like an access token or private key"
    return None


def saved_token() -> str | None:
    """The token this machine would push with (HF_TOKEN or the saved login), to refuse uploading it."""
    from huggingface_hub import get_token

    return get_token()


def refuse_credentials(folder: Path, files: Sequence[str], token: str | None = None, shown: Path | None = None) -> None:
    """Refuse a push that would publish a token or key; `shown` is the folder to name, when `folder`
    is a push's private copy of it (where the check runs again, on the bytes that are uploaded)."""
    problems = [p for rel in files if (p := credential_problem(folder, rel, token))]
    if problems:
        raise MythosError(
            f"refusing to upload credentials: {'; '.join(problems)}; remove the file(s) from {shown or folder} "
            "or leave them out with --exclude"
        )


def holds_secret(data: bytes, token: str | None) -> bool:
    """Does `data` hold `token` or anything shaped like a credential?"""
    return bool((token and token.encode() in data) or _SECRET.search(data))
