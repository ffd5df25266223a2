"""`mythos-convert push [OUT] --repo OWNER/NAME`: check the folder, then publish it in one commit."""

from __future__ import annotations

from pathlib import Path

from mythos_convert.cli import options as o


def push(
    out: o.PushFolderArg = Path("out"),
    repo: o.PushRepoOpt = "",
    gguf_repo: o.GGUFRepoOpt = None,
    endpoint: o.EndpointOpt = None,
    token: o.TokenOpt = None,
    private: o.PrivateOpt = False,
    revision: o.RevisionOpt = None,
    create_pr: o.CreatePROpt = False,
    commit_message: o.CommitMessageOpt = None,
    include: o.IncludeOpt = None,
    exclude: o.ExcludeOpt = None,
    dry_run: o.PushDryRunOpt = False,
    skip_checks: o.SkipChecksOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Publish OUT to the Hub: checks (config, weights, tokenizer, card, last verify), then one commit."""
    from mythos_convert.hub.publish import publish, render_published
    from mythos_convert.support.ui import results

    commit = dict(revision=revision, create_pr=create_pr, private=private, commit_message=commit_message)
    upload = dict(endpoint=endpoint, include=include, exclude=exclude)
    published = publish(
        out, repo, gguf_repo=gguf_repo, token=token, dry_run=dry_run, skip_checks=skip_checks, **commit, **upload
    )
    results(render_published(published))
