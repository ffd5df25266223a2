"""Publishing as one library call: `push` (a model folder, and its GGUF files to a second repo) and
`space` (a demo of a published model), each checked before anything is sent.

The steps are `hub.push`'s (plan, frozen private copy, checks, credentials, one commit),
`hub.gguf_repo`'s and `hub.space`'s; this module runs them in order, as the CLI and a script do.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mythos_convert.errors import MythosError
from mythos_convert.hub.push import (
    PushPlan,
    PushResult,
    checked_push,
    dry_run_summary,
    is_repo_id,
    plan_push,
    plan_table,
    push,
    refuse_plan_credentials,
    resolve_token,
)
from mythos_convert.hub.space import default_model, push_space, write_space
from mythos_convert.support.ui import info, is_quiet, warn


@dataclass
class Published:
    """What `publish` did: the plans (a dry run stops there) and, after a push, each commit."""

    plans: list[PushPlan]
    pushed: list[PushResult] = field(default_factory=list)
    dry_run: bool = False
    space: bool = False  # a Space (`publish_space`), not a model repo


def render_published(published: Published) -> list:
    """What `push` and `space` print: a dry run's plans (table, then summary), else each commit's
    URL and pull request (a Space: its page)."""
    rendered: list = []
    if published.dry_run:
        for plan in published.plans:
            table, summary = plan_table(plan), dry_run_summary(plan)
            if published.space:
                table.title = f"{plan.endpoint}/spaces/{plan.repo_id} @ {plan.revision}"
                summary = summary.replace(f"{plan.endpoint}/", f"{plan.endpoint}/spaces/", 1)
            rendered += [table, summary]
        return rendered
    for pushed in published.pushed:
        rendered.append(pushed.repo_url if published.space else pushed.commit_url)
        if pushed.pr_url and not published.space:
            rendered.append(pushed.pr_url)
    return rendered


def publish(
    folder: str | Path,
    repo: str,
    *,
    gguf_repo: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    skip_checks: bool = False,
    **options: Any,
) -> Published:
    """Check an exported folder, then push it to `repo` in one commit (and its GGUF files to `gguf_repo`).

    `options` are `hub.push.plan_push`'s keywords (endpoint, revision, create_pr, private,
    commit_message, include, exclude). Every check runs, on a private copy, before the first commit.

    Raises:
        MythosError: no repo or token, a bad repo id, a failed check (unless `skip_checks`),
            credentials in a file, a refused or failed upload.
    """
    if not repo:
        raise MythosError("--repo is required: pass the Hub repo id as OWNER/NAME")
    if skip_checks:
        warn("--skip-checks: publishing without the checks (the last verify and its file hashes are not checked)")
    if not dry_run:
        token = resolve_token(token)  # before the slow checks: a missing token is the commonest mistake
    options.update(dry_run=dry_run, skip_checks=skip_checks)
    with contextlib.ExitStack() as stack:  # the plans' private copy lives until the last commit
        if gguf_repo:
            from mythos_convert.hub.gguf_repo import checked_pushes

            plans = stack.enter_context(checked_pushes(folder, repo, gguf_repo, **options))
        else:
            plans = [stack.enter_context(checked_push(folder, repo, **options))]
        published = Published(plans, dry_run=dry_run)
        if dry_run:
            return published
        for plan in plans:  # every file, before the first commit
            refuse_plan_credentials(plan, token)
        if is_quiet():
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        for plan in plans:
            info(f"uploading {len(plan.files)} files to {plan.endpoint}/{plan.repo_id} ({plan.revision})")
            published.pushed.append(push(plan, token))
    return published


def publish_space(
    folder: str | Path,
    repo: str,
    *,
    model: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    **options: Any,
) -> Published:
    """Write a Gradio demo of the published `model` into `folder` (`hub.space`) and push it as the Space `repo`.

    `options` are `hub.push.plan_push`'s keywords (endpoint, private). A dry run writes the files
    and plans the upload, uploading nothing.

    Raises:
        MythosError: no or a bad repo id, no model implied, no token, `folder` not empty without
            `force`, a refused or failed upload.
    """
    if not repo:
        raise MythosError("--repo is required: pass the Space's repo id as OWNER/NAME-demo")
    if not is_repo_id(repo):  # before anything is written
        raise MythosError(f"--repo {repo!r} is not a Hub repo id: use OWNER/NAME-demo, e.g. my-user/mythos-tiny-demo")
    model_id = default_model(repo, model)
    if not dry_run:
        token = resolve_token(token)  # before writing: a missing token is the commonest mistake
    written = write_space(folder, model_id, force=force)
    info(f"wrote {', '.join(written.files)} to {written.folder} for {model_id}")
    plan = plan_push(folder, repo, commit_message=f"Demo of {model_id}", **options)
    published = Published([plan], dry_run=dry_run, space=True)
    if not dry_run:
        published.pushed.append(push_space(plan, token))
    return published
