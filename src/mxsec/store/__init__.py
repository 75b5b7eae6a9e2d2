"""mxsec.store."""
