"""`mythos-convert space OUT --repo OWNER/NAME-demo`: a Gradio demo of a published model, pushed as a Space."""

from __future__ import annotations

from mythos_convert.cli import options as o


def space(
    out: o.SpaceFolderArg,
    repo: o.SpaceRepoOpt = "",
    model: o.SpaceModelOpt = None,
    endpoint: o.EndpointOpt = None,
    token: o.TokenOpt = None,
    private: o.SpacePrivateOpt = False,
    dry_run: o.SpaceDryRunOpt = False,
    force: o.ForceOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Write OUT/app.py (loads the model with transformers, samples as its card says) and push it as a Space."""
    from mythos_convert.hub.publish import publish_space, render_published
    from mythos_convert.support.ui import results

    published = publish_space(
        out, repo, model=model, token=token, dry_run=dry_run, force=force, endpoint=endpoint, private=private
    )
    results(render_published(published))
