"""Shared test configuration. The control-plane fixtures come from vworkspace.testing.pytest_plugin
(enabled in pyproject.toml); pytester is used to test that plugin itself."""

pytest_plugins = ["pytester"]
