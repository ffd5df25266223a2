"""Publish an exported folder to the Hugging Face Hub in one commit.

`plan_push` decides locally what would be uploaded (files, sizes, LFS or not, target), which is
all `--dry-run` shows: huggingface_hub has no upload dry run. `push` then creates the repo (and the
branch), and makes ONE `create_commit` with every file, retrying transient failures (5xx, dropped
connections) with exponential backoff, and turning the Hub's errors into one-line MythosErrors
that say what to do.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mythos_convert import __version__
from mythos_convert.errors import MythosError
from mythos_convert.safe_paths import folder_files, refuse_unsafe, scan_folder

T = TypeVar("T")

# The Hub's default .gitattributes puts these in LFS; it also puts anything > 10 MB or binary there.
LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.mlmodel *.model *.msgpack *.npy *.npz *.onnx "
    "*.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors *.tar *.tar.* *.tflite *.tgz *.wasm "
    "*.xz *.zip *.zst *tfevents* *.gguf"
).split()
LFS_SIZE = 10 * 1024 * 1024
# OWNER/NAME in ASCII; `is_repo_id` matches it against the whole text (`$` would allow a trailing newline).
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF = 2.0  # seconds before the 2nd attempt; doubles each time


def is_repo_id(text: str | None) -> bool:
    """Is `text`, all of it, a Hub repo id OWNER/NAME the Hub accepts (huggingface_hub's rules too: no
    `--` or `..`, no `.git` ending)? Checked before anything is written or sent."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(text, str) or REPO_ID.fullmatch(text) is None:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


@dataclass(frozen=True)
class PlannedFile:
    """One file of the commit: where it is, where it goes, and whether the Hub stores it in LFS."""

    path_in_repo: str
    local: Path
    size: int
    lfs: bool
    why: str  # "pattern *.safetensors", "> 10 MB", "binary" or "text"
    content: bytes | None = None  # written by the push itself (a GGUF repo's card), not read from the folder


def generated_file(path_in_repo: str, content: bytes) -> PlannedFile:
    """A file the push makes (not in the folder): uploaded from memory, scanned for credentials too."""
    reason = lfs_reason(path_in_repo, len(content), content[:512])
    return PlannedFile(path_in_repo, Path(path_in_repo), len(content), reason is not None, reason or "text", content)


@dataclass
class PushPlan:
    """Everything a push will do, decided locally."""

    folder: Path
    repo_id: str
    endpoint: str
    revision: str = "main"
    create_pr: bool = False
    private: bool = False
    commit_message: str = ""
    files: list[PlannedFile] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class PushResult:
    commit_url: str
    commit_oid: str | None
    pr_url: str | None
    repo_url: str


def lfs_reason(path_in_repo: str, size: int, sample: bytes) -> str | None:
    """Why the Hub would store this file in LFS (None: a regular git file)."""
    name = path_in_repo.rsplit("/", 1)[-1]
    for pattern in LFS_PATTERNS:
        if fnmatch.fnmatch(name, pattern):
            return f"pattern {pattern}"
    if size > LFS_SIZE:
        return "> 10 MB"
    if b"\0" in sample:
        return "binary"
    return None


def _select(paths: list[str], include: Sequence[str] | None, exclude: Sequence[str] | None) -> list[str]:
    """huggingface_hub's own allow/ignore pattern semantics (a trailing "/" means the whole folder)."""
    from huggingface_hub.utils import filter_repo_objects

    return list(filter_repo_objects(paths, allow_patterns=list(include or []) or None, ignore_patterns=exclude))


def local_files(folder: Path) -> list[str]:
    """Files a push considers: every regular file but hidden entries (caches, atomic-write temporaries, .git).

    Raises:
        MythosError: a symlink or special file anywhere in the folder (`safe_paths.folder_files`).
    """
    return folder_files(folder)


def select_files(folder: Path, include: Sequence[str] | None, exclude: Sequence[str] | None) -> list[str]:
    """The files an upload takes, refusing any selected symlink or special file (an excluded one is left alone)."""
    files, unsafe = scan_folder(folder)
    selected = _select(files + list(unsafe), include, exclude)
    refuse_unsafe(folder, {rel: unsafe[rel] for rel in selected if rel in unsafe})
    return selected


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
    data = path.read_bytes()
    if (token and token.encode() in data) or _SECRET.search(data):
        return f"{rel} contains what looks like an access token or private key"
    return None


def _saved_token() -> str | None:
    """The token this machine would push with (HF_TOKEN or the saved login), to refuse uploading it."""
    from huggingface_hub import get_token

    return get_token()


def refuse_credentials(folder: Path, files: Sequence[str], token: str | None = None) -> None:
    """Refuse a push that would publish a token or key (checked again right before the commit)."""
    problems = [p for rel in files if (p := credential_problem(folder, rel, token))]
    if problems:
        raise MythosError(
            f"refusing to upload credentials: {'; '.join(problems)}; remove the file(s) from {folder} "
            "or leave them out with --exclude"
        )


def resolve_endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def plan_push(
    folder: str | Path,
    repo_id: str,
    *,
    endpoint: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    private: bool = False,
    commit_message: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> PushPlan:
    """Decide what a push uploads, without any network access.

    Raises:
        MythosError: bad repo id, missing folder, nothing to upload, --create-pr with a branch.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MythosError(f"{folder} is not a folder: pass the folder `mythos-convert hf` wrote (default out/)")
    if not is_repo_id(repo_id):
        raise MythosError(f"--repo {repo_id!r} is not a Hub repo id: use OWNER/NAME, e.g. my-user/mythos-tiny")
    revision = revision or "main"
    if create_pr and revision != "main":
        raise MythosError("--create-pr opens a pull request against main: drop --revision or drop --create-pr")
    selected = select_files(folder, include, exclude)
    if not selected:
        raise MythosError(f"no files of {folder} are selected for upload: check --include / --exclude")
    refuse_credentials(folder, selected, _saved_token())
    files = []
    for rel in selected:
        local = folder / rel
        size = local.stat().st_size
        with local.open("rb") as fh:
            sample = fh.read(512)
        reason = lfs_reason(rel, size, sample)
        files.append(PlannedFile(rel, local, size, reason is not None, reason or "text"))
    message = commit_message or f"Upload {folder.name} with mythos-convert {__version__}"
    return PushPlan(folder, repo_id, resolve_endpoint(endpoint), revision, create_pr, private, message, files)


def prepare_push(
    folder: str | Path, repo_id: str, *, dry_run: bool = False, skip_checks: bool = False, **options
) -> PushPlan:
    """Plan a push, point the card's quickstart at the repo (not in a dry run), and check the folder.

    `options` are `plan_push`'s keywords. Raises MythosError listing every failed check (unless
    `skip_checks`), or for a bad folder, repo id or option; nothing has been sent at that point.
    """
    from mythos_convert.card import point_quickstart_at
    from mythos_convert.hub_checks import check_folder
    from mythos_convert.ui import info

    plan = plan_push(folder, repo_id, **options)  # validates everything before anything changes
    if not dry_run and point_quickstart_at(folder, repo_id):
        info(f"README.md: the quickstart now loads {repo_id!r}")
        plan = plan_push(folder, repo_id, **options)
    if not skip_checks:
        problems = check_folder(folder, {f.path_in_repo for f in plan.files})
        if problems:
            listed = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
            raise MythosError(f"{folder} fails {len(problems)} check(s): {listed}; fix them or pass --skip-checks")
        info("checks passed: config, weights, tokenizer, card, last verify")
    return plan


def dry_run_summary(plan: PushPlan) -> str:
    from mythos_convert.ui import human_size

    n_lfs = sum(f.lfs for f in plan.files)
    return (
        f"dry run: would upload {len(plan.files)} files ({human_size(plan.total_size)}, {n_lfs} via LFS) to "
        f"{plan.endpoint}/{plan.repo_id} revision {plan.revision}"
        f"{' as a pull request' if plan.create_pr else ''} with message {plan.commit_message!r}; nothing uploaded"
    )


# ----------------------------------------------------------------------------- errors and retries


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_network_error(exc: BaseException) -> bool:
    """A transport failure (refused, reset, dropped, timed out), whatever HTTP library raised it."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    transport = {"TransportError", "NetworkError", "RemoteProtocolError", "TimeoutException", "ConnectError"}
    return bool(names & transport) or isinstance(exc, (ConnectionError, TimeoutError))


def _transient(exc: BaseException) -> bool:
    status = _status(exc)
    return _is_network_error(exc) or (status is not None and (status >= 500 or status in (408, 429)))


def explain(exc: BaseException, plan: PushPlan, what: str, attempts: int) -> MythosError:
    """The one-line, actionable message for a failure talking to the Hub."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    status, where = _status(exc), f"{plan.endpoint}/{plan.repo_id}"
    if _is_network_error(exc):
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        return MythosError(
            f"network failure while trying to {what} at {plan.endpoint} ({reason}), {attempts} attempt(s): "
            "check your connection, proxy settings and --endpoint / HF_ENDPOINT, then retry"
        )
    if status == 401:
        return MythosError(
            f"the Hub at {plan.endpoint} rejected the token (401 Unauthorized): pass a valid write token with "
            "--token, set HF_TOKEN or run `hf auth login`"
        )
    if status == 403:
        return MythosError(
            f"the token has no write access to {plan.repo_id} (403 Forbidden): use a token with write permission "
            "for that namespace (https://huggingface.co/settings/tokens) or push to your own namespace"
        )
    if isinstance(exc, RevisionNotFoundError):
        return MythosError(f"revision {plan.revision!r} not found in {where} (404): check --revision")
    if isinstance(exc, RepositoryNotFoundError) or status == 404:
        return MythosError(
            f"repository {plan.repo_id} not found at {plan.endpoint} (404) while trying to {what}: "
            "check --repo and that the token can see it"
        )
    if status is not None:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        tries = f" after {attempts} attempt(s)" if _transient(exc) else ""
        return MythosError(f"the Hub answered {status} while trying to {what}{tries} ({detail}): retry later")
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
    return MythosError(f"could not {what} at {where}: {detail}; check --endpoint and --repo, then retry")


def with_retries(fn: Callable[[], T], plan: PushPlan, what: str, attempts: int, backoff: float) -> T:
    """Run `fn`, retrying transient failures with exponential backoff; other failures raise at once."""
    from mythos_convert.ui import warn

    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except MythosError:
            raise
        except Exception as exc:
            if not _transient(exc) or attempt == attempts:
                raise explain(exc, plan, what, attempt) from exc
            delay = backoff * 2 ** (attempt - 1)
            warn(f"could not {what} (attempt {attempt}/{attempts}: {type(exc).__name__}); retrying in {delay:.1f} s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def retry_settings(attempts: int | None, backoff: float | None) -> tuple[int, float]:
    """Attempts and base delay: arguments, else MYTHOS_PUSH_ATTEMPTS / MYTHOS_PUSH_BACKOFF, else defaults."""
    try:
        attempts = attempts if attempts is not None else int(os.environ.get("MYTHOS_PUSH_ATTEMPTS", DEFAULT_ATTEMPTS))
        backoff = backoff if backoff is not None else float(os.environ.get("MYTHOS_PUSH_BACKOFF", DEFAULT_BACKOFF))
    except ValueError as exc:
        raise MythosError(
            "MYTHOS_PUSH_ATTEMPTS must be an integer and MYTHOS_PUSH_BACKOFF a number: fix or unset them"
        ) from exc
    return max(1, attempts), max(0.0, backoff)


# ----------------------------------------------------------------------------- the push


def resolve_token(token: str | None) -> str:
    """--token, else HF_TOKEN / the saved login; a clear error when there is none."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise MythosError("no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login`")
    return token


@contextlib.contextmanager
def endpoint_scope(endpoint: str) -> Iterator[None]:
    """Point huggingface_hub's global endpoint at `endpoint` for the duration of a push.

    huggingface_hub reads HF_ENDPOINT once, at import; HfApi takes `endpoint=`, but module-level
    helpers (agent detection in the request headers, ModelCard validation) use the global. Without
    this, `--endpoint` would still send those requests to huggingface.co.
    """
    from huggingface_hub import constants

    previous = constants.ENDPOINT
    constants.ENDPOINT = endpoint
    try:
        yield
    finally:
        constants.ENDPOINT = previous


def push(
    plan: PushPlan, token: str | None = None, *, attempts: int | None = None, backoff: float | None = None
) -> PushResult:
    """Create the repo (and branch) if needed and upload every planned file in one commit.

    Raises:
        MythosError: no token, 401/403, 404, network failure after retries, a rejected commit.
    """
    token = resolve_token(token)
    attempts, backoff = retry_settings(attempts, backoff)
    recheck_files(plan, token)
    with endpoint_scope(plan.endpoint):
        return _push(plan, token, attempts, backoff)


def recheck_files(plan: PushPlan, token: str | None = None) -> None:
    """Right before the commit: every planned file is still a regular file inside the folder, and none
    holds credentials (the token being used included). The checks between plan and push take time."""
    present, unsafe = scan_folder(plan.folder)
    local = [f for f in plan.files if f.content is None]
    refuse_unsafe(plan.folder, {f.path_in_repo: unsafe[f.path_in_repo] for f in local if f.path_in_repo in unsafe})
    gone = [f.path_in_repo for f in local if f.path_in_repo not in present]
    if gone:
        raise MythosError(f"{', '.join(gone)} changed or disappeared from {plan.folder} during the push: rerun push")
    refuse_credentials(plan.folder, [f.path_in_repo for f in local], token)
    made = [f.path_in_repo for f in plan.files if f.content is not None and _holds_secret(f.content, token)]
    if made:
        raise MythosError(
            f"refusing to upload credentials: the generated {', '.join(made)} contains what looks like an access "
            "token or private key; remove it from the card metadata"
        )


def _holds_secret(data: bytes, token: str | None) -> bool:
    return bool((token and token.encode() in data) or _SECRET.search(data))


def _push(plan: PushPlan, token: str, attempts: int, backoff: float) -> PushResult:
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=plan.endpoint, token=token, library_name="mythos-convert", library_version=__version__)
    repo_url = with_retries(
        lambda: api.create_repo(plan.repo_id, private=plan.private or None, exist_ok=True),
        plan,
        f"create the repo {plan.repo_id}",
        attempts,
        backoff,
    )
    if plan.revision != "main":
        with_retries(
            lambda: api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True),
            plan,
            f"create the branch {plan.revision}",
            attempts,
            backoff,
        )

    def commit():
        # Operations are mutated by create_commit and cannot be reused: build them per attempt.
        operations = [
            CommitOperationAdd(f.path_in_repo, f.content if f.content is not None else str(f.local)) for f in plan.files
        ]
        return api.create_commit(
            plan.repo_id,
            operations,
            commit_message=plan.commit_message,
            revision=None if plan.create_pr else plan.revision,
            create_pr=plan.create_pr,
        )

    info = with_retries(commit, plan, f"commit {len(plan.files)} files to {plan.repo_id}", attempts, backoff)
    return PushResult(
        commit_url=info.commit_url, commit_oid=info.oid, pr_url=info.pr_url or None, repo_url=str(repo_url)
    )


def plan_table(plan: PushPlan):
    """A rich table of the plan, for --dry-run."""
    from rich.table import Table

    from mythos_convert.ui import human_size

    table = Table(
        title=f"{plan.endpoint}/{plan.repo_id} @ {plan.revision}{' (pull request)' if plan.create_pr else ''}"
    )
    for column in ("file", "size", "storage"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for f in plan.files:
        storage = f"LFS ({f.why})" if f.lfs else "regular"
        table.add_row(f.path_in_repo, human_size(f.size), storage + (", generated" if f.content is not None else ""))
    return table
