"""mxsec.daemon."""
