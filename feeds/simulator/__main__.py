"""``python -m feeds.simulator``: run the local exchange (see ``feeds.simulator.server``)."""

from .server import main

raise SystemExit(main())
