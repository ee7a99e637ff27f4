"""HTTP service and web page (FastAPI): ``siamkit serve``."""
