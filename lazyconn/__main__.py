"""``python -m lazyconn ...`` is the ``lazyconn`` command."""

from lazyconn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
