"""mxsec.sts."""
