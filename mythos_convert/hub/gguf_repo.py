"""`push --gguf-repo OWNER/NAME-GGUF`: the GGUF files in a repository of their own, linked the Hub's way.

The Hub shows a GGUF repository as a quantization of its model when the GGUF repo's card says
`base_model: OWNER/NAME` and `base_model_relation: quantized` (tag `gguf`); the model's page then
lists it under "Quantizations". So the push makes two commits: the model folder without its GGUF
files and Modelfile (its card linking to the GGUF repo) to `--repo`, then the GGUF files, the
Modelfile, the size-vs-KL chart and a GGUF card (the "Files" quant table) to `--gguf-repo`.
The GGUF card is rendered in memory from the same folder facts as the main card and uploaded from
there; the folder keeps one README.md. Both plans are frozen in one private copy of the folder
(`hub.frozen`) and go through `hub`'s checks on it (links, special files, credentials, verify
results bound to the files); the card is rendered from that copy too.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from mythos_convert.card import (
    architecture_tags,
    collect_facts,
    link_gguf_repo,
    measured_results,
)
from mythos_convert.errors import MythosError
from mythos_convert.evaluate.chart import CHART_FILE
from mythos_convert.formats.metadata import load_meta
from mythos_convert.hub.checks import check_folder, check_inputs, check_verify
from mythos_convert.hub.files import PushPlan, generated_file
from mythos_convert.hub.push import frozen, is_repo_id, plan_push, prepare_push, refuse_failed, resolve_endpoint
from mythos_convert.support.ui import info

GGUF_TEMPLATE_NAME = "gguf_template.md.j2"
GGUF_FILES = ("*.gguf", "Modelfile", CHART_FILE)  # what the GGUF repo holds (plus its card)
MAIN_EXCLUDED = ("*.gguf", "Modelfile")  # what the model repo then leaves to it


def gguf_card_text(folder: str | Path, base_repo: str, endpoint: str, meta_path: str | Path | None = None) -> str:
    """The GGUF repo's card (front matter the Hub links by, the quant table, usage), rendered in memory."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    meta = load_meta(meta_path)
    facts = collect_facts(folder)
    if not facts["gguf"]:
        raise MythosError(f"{folder} holds no .gguf files for --gguf-repo: run `mythos-convert gguf {folder}` first")
    tags = ["gguf", *[t for t in architecture_tags(facts["arch"], facts["config"], True) if t != "gguf"]]
    tags += [t for t in meta.get("tags") or [] if t not in tags]
    evals = measured_results(facts, ggufs_only=True)
    data = ModelCardData(
        language=meta.get("language"),
        license=meta.get("license"),
        library_name="gguf",
        pipeline_tag="text-generation",
        tags=tags,
        base_model=base_repo,
        base_model_relation="quantized",
        model_name=f"{meta.get('model_name')} GGUF" if evals else None,
        eval_results=evals or None,
    )
    template = resources.files("mythos_convert.model_card").joinpath(GGUF_TEMPLATE_NAME).read_text(encoding="utf-8")
    card = ModelCard.from_template(
        data,
        template_str=template,
        meta=meta,
        facts=facts,
        base_repo=base_repo,
        endpoint=endpoint.rstrip("/"),
        inference=meta.get("inference") or {},
    )
    return re.sub(r"\n{3,}", "\n\n", str(card))


@contextlib.contextmanager
def checked_pushes(
    folder: str | Path,
    repo_id: str,
    gguf_repo: str,
    *,
    dry_run: bool = False,
    skip_checks: bool = False,
    endpoint: str | None = None,
    exclude: list[str] | None = None,
    **options,
) -> Iterator[list[PushPlan]]:
    """The two plans of `push --gguf-repo`, frozen together (one private copy, not in a dry run) and
    checked on it: the model repo's, then the GGUF repo's, whose card is rendered from the copy too.

    `options` are `plan_push`'s keywords (revision, private, create_pr, commit_message, include).
    Raises MythosError before anything is sent: a bad repo id, the same repo twice, no GGUF files,
    a failed check.
    """
    folder = Path(folder)
    if not is_repo_id(gguf_repo):
        raise MythosError(f"--gguf-repo {gguf_repo!r} is not a Hub repo id: use OWNER/NAME, e.g. me/mythos-tiny-GGUF")
    if gguf_repo == repo_id:
        raise MythosError(f"--gguf-repo is --repo ({repo_id}): name another repo, e.g. {repo_id}-GGUF")
    if not any(p.is_file() for p in folder.glob("*.gguf")):
        raise MythosError(f"{folder} holds no .gguf files for --gguf-repo: run `mythos-convert gguf {folder}` first")
    url = resolve_endpoint(endpoint)
    if not dry_run and link_gguf_repo(folder, gguf_repo, url):
        info(f"README.md: the GGUF section now links {gguf_repo!r}")
    main = prepare_push(
        folder, repo_id, dry_run=dry_run, endpoint=endpoint, exclude=[*(exclude or []), *MAIN_EXCLUDED], **options
    )
    options = {**options, "include": list(GGUF_FILES)}
    message = options.pop("commit_message", None) or f"Upload GGUF files of {repo_id}"
    plan = plan_push(folder, gguf_repo, endpoint=endpoint, exclude=exclude, commit_message=message, **options)
    main_files, gguf_files = ({f.path_in_repo for f in p.files} for p in (main, plan))
    if not any(name.endswith(".gguf") for name in gguf_files):
        raise MythosError(f"no .gguf file of {folder} is selected for --gguf-repo: check --exclude")
    also = check_inputs(folder, main_files | gguf_files)  # what the checks and the GGUF card read
    with frozen([main, plan], copy=not dry_run, also=also) as snap:
        if not skip_checks:
            refuse_failed(snap, check_folder(snap.root, main_files, snap.digests), f"{folder} fails")
            refuse_failed(snap, check_verify(snap.root, gguf_files, snap.digests), f"the GGUF files of {folder} fail")
            info("checks passed: config, weights, tokenizer, card, last verify, GGUF files")
        card = gguf_card_text(snap.root, repo_id, url)
        plan.files.append(generated_file("README.md", card.encode("utf-8")))
        yield [main, plan]
