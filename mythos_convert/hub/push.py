"""Publish an exported folder to the Hugging Face Hub in one commit.

`plan_push` decides locally what would be uploaded (files, sizes, LFS or not, target), which is
all `--dry-run` shows: huggingface_hub has no upload dry run. `frozen` copies the planned files once
into a private folder (`snapshot`) and runs the checks on that copy; `push` uploads only the copy,
so what is published is exactly what was checked. It creates the repo (and the branch), uploads,
refuses to commit if the user's folder no longer holds the copied bytes, and makes ONE commit with
every file, retrying transient failures with exponential backoff and turning the Hub's errors
into one-line MythosErrors that say what to do (`hub.retries`).

Which files a folder offers and how the Hub stores each is `hub.files`; the refusal to publish a
token or key is `hub.credentials`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mythos_convert import __version__
from mythos_convert.errors import MythosError
from mythos_convert.hub.credentials import holds_secret, refuse_credentials, saved_token
from mythos_convert.hub.files import PushPlan, planned_file, select_files
from mythos_convert.hub.retries import retry_settings, with_retries
from mythos_convert.hub.snapshot import Snapshot, take_snapshot

if TYPE_CHECKING:  # huggingface_hub is imported where used: planning a push needs little of it
    from huggingface_hub import CommitInfo, HfApi

# OWNER/NAME in ASCII; `is_repo_id` matches it against the whole text (`$` would allow a trailing newline).
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


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
class PushResult:
    commit_url: str
    commit_oid: str | None
    pr_url: str | None
    repo_url: str


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
    refuse_credentials(folder, selected, saved_token())
    files = [planned_file(folder, rel) for rel in selected]
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
    made = [f.path_in_repo for f in plan.files if f.content is not None and holds_secret(f.content, token)]
    if made:
        raise MythosError(
            f"refusing to upload credentials: the generated {', '.join(made)} contains what looks like an access "
            "token or private key; remove it from the card metadata"
        )


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
    where = f"the Space {plan.repo_id}" if repo_type == "space" else plan.repo_id
    api = HfApi(endpoint=plan.endpoint, token=token, library_name="mythos-convert", library_version=__version__)
    repo_url = _create_repo(api, plan, repo_type, attempts, backoff)
    info = with_retries(
        lambda: _commit(api, plan, snap, repo_type),
        plan,
        f"commit {len(plan.files)} files to {where}",
        attempts,
        backoff,
    )
    return PushResult(
        commit_url=info.commit_url, commit_oid=info.oid, pr_url=info.pr_url or None, repo_url=str(repo_url)
    )


def _create_repo(api: HfApi, plan: PushPlan, repo_type: str, attempts: int, backoff: float) -> str:
    """Create the repo (a Gradio Space for `repo_type="space"`) and the branch, unless they exist."""
    space = repo_type == "space"
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
    return repo_url


def _commit(api: HfApi, plan: PushPlan, snap: Snapshot, repo_type: str) -> CommitInfo:
    """Upload every file, then make the one commit, only if the folder still holds what was checked and uploaded."""
    # Operations are mutated by create_commit and cannot be reused: build them per attempt.
    operations = _operations(plan, snap)
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
