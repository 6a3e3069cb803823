"""``python -m edgeops.cli``: the same as the ``edgeops`` console script (handy with ``python -X importtime``)."""

from . import main

main()
