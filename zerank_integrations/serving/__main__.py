"""``python -m zerank_integrations.serving --model ...``: run the rerank server."""

from zerank_integrations.serving.cli import main

raise SystemExit(main())
