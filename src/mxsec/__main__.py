"""``python -m mxsec``: the same command line as the ``mxsec`` script."""

from mxsec.cli import main

if __name__ == "__main__":
    main(prog_name="mxsec")
