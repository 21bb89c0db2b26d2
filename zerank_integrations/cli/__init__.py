"""``zerank-integrations``: put documents in Chroma, ask, see what reranking changes in quality and tokens.

One module per subcommand (``ingest``, ``search``, ``eval``, ``demo``, ``serve``, ``make_test_model``), the
options they share in :mod:`~zerank_integrations.cli.options`, helpers in :mod:`~zerank_integrations.cli.support`,
and the entry point in :mod:`~zerank_integrations.cli.main`. Heavy modules (chromadb, sentence-transformers,
torch, FastAPI) are imported inside the subcommand that needs them, so ``--help`` is instant and ``serve`` works
without the Chroma extra.
"""

from __future__ import annotations

from zerank_integrations.cli.demo import DEMO_COLLECTION
from zerank_integrations.cli.main import build_parser, main
from zerank_integrations.cli.support import PROG, CliError
from zerank_integrations.options import add_scorer_arguments, scorer_options
from zerank_integrations.retrieval.corpus import packaged_med

__all__ = [
    "DEMO_COLLECTION",
    "PROG",
    "CliError",
    "add_scorer_arguments",  # kept here for zerank_integrations.serving.cli; new code: zerank_integrations.options
    "build_parser",
    "main",
    "packaged_med",
    "scorer_options",
]
