"""``python -m zerank_integrations``: the same command as ``zerank-integrations``."""

from zerank_integrations.cli import main

raise SystemExit(main())
