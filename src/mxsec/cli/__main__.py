"""``python -m mxsec.cli``: the same command line as the ``mxsec`` script."""

from mxsec.cli.main import main

if __name__ == "__main__":
    main(prog_name="mxsec")
