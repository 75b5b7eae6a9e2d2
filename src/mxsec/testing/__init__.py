"""mxsec.testing."""
