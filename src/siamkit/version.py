"""The version of siamkit (one place; the package, the CLI's --version and the service's OpenAPI read it)."""

__version__ = "0.1.0"
