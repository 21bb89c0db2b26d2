"""``python -m zerank_integrations.cli``: the same command as ``zerank-integrations``."""

from zerank_integrations.cli.main import main

raise SystemExit(main())
