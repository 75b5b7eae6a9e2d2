"""mxsec.devtools."""
