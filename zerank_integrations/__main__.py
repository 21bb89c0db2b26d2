"""``python -m zerank_integrations``: the same command as ``zerank-integrations``."""

from zerank_integrations.cli.main import main

raise SystemExit(main())
