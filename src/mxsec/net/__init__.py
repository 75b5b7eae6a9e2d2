"""mxsec.net."""
