"""The model card: README.md of an exported folder, rendered from what the folder really holds.

`facts` reads the folder (every figure from a file), `render` turns facts and the release
metadata into the card, `edits` holds the push-time changes and the front-matter check.
"""

from mythos_convert.card.edits import (
    GGUF_REPO_MARKER,
    REQUIRED_FRONT_MATTER,
    card_problems,
    gguf_repo_line,
    link_gguf_repo,
    point_quickstart_at,
)
from mythos_convert.card.facts import REQUIRED_CONFIG_FIELDS, collect_facts, human_count, read_config
from mythos_convert.card.render import (
    CARD_FILE,
    architecture_tags,
    build_card,
    measured_results,
    template_text,
    write_card,
    write_card_chart,
)

__all__ = [
    "CARD_FILE",
    "GGUF_REPO_MARKER",
    "REQUIRED_CONFIG_FIELDS",
    "REQUIRED_FRONT_MATTER",
    "architecture_tags",
    "build_card",
    "card_problems",
    "collect_facts",
    "gguf_repo_line",
    "human_count",
    "link_gguf_repo",
    "measured_results",
    "point_quickstart_at",
    "read_config",
    "template_text",
    "write_card",
    "write_card_chart",
]
