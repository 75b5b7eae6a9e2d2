"""The ``mxsec`` command line: one module per command group, registered in one place (:mod:`mxsec.cli.main`).

:mod:`mxsec.cli.common` holds what every command shares (one-line errors, the error guard, the network options,
config loading); :mod:`mxsec.cli.demo` is ``make demo``. Commands compose the front-ends and adapters; nothing
below the command line imports this package.
"""

from mxsec.cli.main import main

__all__ = ["main"]
