"""``python -m lazyconn ...`` is the ``lazyconn`` command."""

from lazyconn.cli import main

raise SystemExit(main())
