"""Publish an exported folder to the Hugging Face Hub in one commit.

`plan_push` decides locally what would be uploaded (files, sizes, LFS or not, target), which is
all `--dry-run` shows: huggingface_hub has no upload dry run. `frozen` copies the planned files once
into a private folder (`snapshot`) and runs the checks on that copy; `push` uploads only the copy,
so what is published is exactly what was checked. It creates the repo (and the branch), uploads,
refuses to commit if the user's folder no longer holds the copied bytes, and makes ONE commit with
every file, retrying transient failures (5xx, dropped connections) with exponential backoff, and
turning the Hub's errors into one-line MythosErrors that say what to do.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mythos_convert import __version__
from mythos_convert.errors import MythosError
from mythos_convert.hub.snapshot import Snapshot, take_snapshot
from mythos_convert.support.safe_paths import folder_files, refuse_unsafe, scan_folder

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
    snapshot: Snapshot | None = None  # the private copy the checks read and the upload reads (`frozen`)

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
    if _holds_secret(path.read_bytes(), token):
        return f"{rel} contains what looks like an access token or private key"
    return None


def _saved_token() -> str | None:
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


def prepare_push(folder: str | Path, repo_id: str, *, dry_run: bool = False, **options) -> PushPlan:
    """Plan a push and point the card's quickstart at the repo (not in a dry run); `frozen` then checks it.

    `options` are `plan_push`'s keywords. Raises MythosError for a bad folder, repo id or option;
    nothing has been sent at that point.
    """
    from mythos_convert.card import point_quickstart_at
    from mythos_convert.support.ui import info

    plan = plan_push(folder, repo_id, **options)  # validates everything before anything changes
    if not dry_run and point_quickstart_at(folder, repo_id):
        info(f"README.md: the quickstart now loads {repo_id!r}")
        plan = plan_push(folder, repo_id, **options)
    return plan


@contextlib.contextmanager
def frozen(plans: Sequence[PushPlan], *, copy: bool = True, also: Iterable[str] = ()) -> Iterator[Snapshot]:
    """The plans' files (and `also`: other files the checks read) copied once into a private folder,
    each plan's `snapshot` set to it for the block; the copy is removed afterwards.

    Checks run inside the block read `snapshot.root`, so they see the bytes the upload sends. With
    `copy=False` (a dry run, which uploads nothing) the snapshot is the folder itself.
    """
    folder = plans[0].folder
    if not copy:
        yield Snapshot(folder, folder)
        return
    names = {f.path_in_repo for plan in plans for f in plan.files if f.content is None} | set(also)
    with take_snapshot(folder, names) as snap:
        for plan in plans:
            plan.snapshot = snap
        try:
            yield snap
        finally:
            for plan in plans:
                plan.snapshot = None


def refuse_failed(snap: Snapshot, problems: list[str], what: str) -> None:
    """One error listing every failed check (`what`: "FOLDER fails"), naming the user's folder, not the copy."""
    if problems:
        listed = "; ".join(f"({i}) {snap.shown(p)}" for i, p in enumerate(problems, 1))
        raise MythosError(f"{what} {len(problems)} check(s): {listed}; fix them or pass --skip-checks")


@contextlib.contextmanager
def checked_push(
    folder: str | Path, repo_id: str, *, dry_run: bool = False, skip_checks: bool = False, **options
) -> Iterator[PushPlan]:
    """`prepare_push`, then the plan frozen (not in a dry run) and checked on the copy (unless
    `skip_checks`): the plan to `push` inside the block. Raises MythosError listing every failed check."""
    from mythos_convert.hub.checks import check_folder, check_inputs
    from mythos_convert.support.ui import info

    plan = prepare_push(folder, repo_id, dry_run=dry_run, **options)
    uploaded = {f.path_in_repo for f in plan.files}
    also = () if skip_checks else check_inputs(plan.folder, uploaded)
    with frozen([plan], copy=not dry_run, also=also) as snap:
        if not skip_checks:
            refuse_failed(snap, check_folder(snap.root, uploaded, snap.digests), f"{plan.folder} fails")
            info("checks passed: config, weights, tokenizer, card, last verify")
        yield plan


def dry_run_summary(plan: PushPlan) -> str:
    from mythos_convert.support.ui import human_size

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
    from mythos_convert.support.ui import warn

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
    plan: PushPlan,
    token: str | None = None,
    *,
    attempts: int | None = None,
    backoff: float | None = None,
    repo_type: str = "model",
) -> PushResult:
    """Create the repo (and branch) if needed and upload every planned file in one commit.

    The files go from the plan's private copy (`frozen`; made here if the plan has none), scanned
    for credentials there. `repo_type="space"` creates a Gradio Space.

    Raises:
        MythosError: no token, credentials in a file, a file changed in the folder during the
            upload (nothing is committed), 401/403, 404, network failure after retries, a rejected commit.
    """
    token = resolve_token(token)
    attempts, backoff = retry_settings(attempts, backoff)
    with contextlib.ExitStack() as stack:
        if plan.snapshot is None:
            stack.enter_context(frozen([plan]))
        refuse_plan_credentials(plan, token)
        with endpoint_scope(plan.endpoint):
            return _push(plan, token, attempts, backoff, repo_type)


def refuse_plan_credentials(plan: PushPlan, token: str | None = None) -> None:
    """No planned file holds credentials (the token being used included), as the private copy holds it."""
    if plan.snapshot is None:
        raise AssertionError("refuse_plan_credentials needs a frozen plan")
    local = [f.path_in_repo for f in plan.files if f.content is None]
    refuse_credentials(plan.snapshot.root, local, token, shown=plan.folder)
    made = [f.path_in_repo for f in plan.files if f.content is not None and _holds_secret(f.content, token)]
    if made:
        raise MythosError(
            f"refusing to upload credentials: the generated {', '.join(made)} contains what looks like an access "
            "token or private key; remove it from the card metadata"
        )


def _holds_secret(data: bytes, token: str | None) -> bool:
    return bool((token and token.encode() in data) or _SECRET.search(data))


def _operations(plan: PushPlan, snap: Snapshot) -> list:
    """One CommitOperationAdd per file, reading the private copy; huggingface_hub's sha256 of each
    must be the one taken while copying (the bytes checked)."""
    from huggingface_hub import CommitOperationAdd

    operations = []
    for f in plan.files:
        if f.content is not None:
            operations.append(CommitOperationAdd(f.path_in_repo, f.content))
            continue
        operation = CommitOperationAdd(f.path_in_repo, str(snap.path(f.path_in_repo)))
        if operation.upload_info.sha256.hex() != snap.digests[f.path_in_repo]["sha256"]:
            raise MythosError(
                f"push's private copy of {f.path_in_repo} changed in {snap.root}: nothing was committed; rerun push"
            )
        operations.append(operation)
    return operations


def refuse_changed(plan: PushPlan, snap: Snapshot) -> None:
    """Refuse to commit when the folder no longer holds the bytes that were checked and uploaded."""
    changed = snap.changed_in_source(f.path_in_repo for f in plan.files if f.content is None)
    if changed:
        raise MythosError(
            f"{', '.join(changed)} changed in {plan.folder} while push uploaded the checked copy: nothing was "
            f"committed to {plan.repo_id}; rerun push to check and publish the folder as it is now"
        )


def _push(plan: PushPlan, token: str, attempts: int, backoff: float, repo_type: str) -> PushResult:
    from huggingface_hub import HfApi

    snap = plan.snapshot
    if snap is None:
        raise AssertionError("_push needs a frozen plan")
    space = repo_type == "space"
    where = f"the Space {plan.repo_id}" if space else plan.repo_id
    api = HfApi(endpoint=plan.endpoint, token=token, library_name="mythos-convert", library_version=__version__)
    repo_url = with_retries(
        lambda: api.create_repo(
            plan.repo_id,
            repo_type=repo_type,
            space_sdk="gradio" if space else None,
            private=plan.private or None,
            exist_ok=True,
        ),
        plan,
        f"create {'the Space' if space else 'the repo'} {plan.repo_id}",
        attempts,
        backoff,
    )
    if plan.revision != "main":
        with_retries(
            lambda: api.create_branch(plan.repo_id, branch=plan.revision, repo_type=repo_type, exist_ok=True),
            plan,
            f"create the branch {plan.revision}",
            attempts,
            backoff,
        )

    def commit():
        # Operations are mutated by create_commit and cannot be reused: build them per attempt.
        operations = _operations(plan, snap)
        # Uploaded first, committed only if the folder still holds what was checked and uploaded.
        api.preupload_lfs_files(
            plan.repo_id,
            additions=operations,
            repo_type=repo_type,
            revision=plan.revision,
            create_pr=plan.create_pr,
            free_memory=False,
        )
        refuse_changed(plan, snap)
        return api.create_commit(
            plan.repo_id,
            operations,
            repo_type=repo_type,
            commit_message=plan.commit_message,
            revision=None if plan.create_pr else plan.revision,
            create_pr=plan.create_pr,
        )

    info = with_retries(commit, plan, f"commit {len(plan.files)} files to {where}", attempts, backoff)
    return PushResult(
        commit_url=info.commit_url, commit_oid=info.oid, pr_url=info.pr_url or None, repo_url=str(repo_url)
    )


def plan_table(plan: PushPlan):
    """A rich table of the plan, for --dry-run."""
    from rich.table import Table

    from mythos_convert.support.ui import human_size

    table = Table(
        title=f"{plan.endpoint}/{plan.repo_id} @ {plan.revision}{' (pull request)' if plan.create_pr else ''}"
    )
    for column in ("file", "size", "storage"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for f in plan.files:
        storage = f"LFS ({f.why})" if f.lfs else "regular"
        table.add_row(f.path_in_repo, human_size(f.size), storage + (", generated" if f.content is not None else ""))
    return table
