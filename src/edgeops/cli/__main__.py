"""``python -m edgeops.cli``: the same as the ``edgeops`` console script (handy with ``python -X importtime``)."""

from edgeops.cli import main

main()
