"""``python -m edge_agent`` is ``edgeops-agent``."""

from .cli import main

raise SystemExit(main())
