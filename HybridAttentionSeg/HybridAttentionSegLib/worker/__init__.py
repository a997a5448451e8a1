"""The inference worker process (``server``) and the Slicer-side client that talks to it in JSON lines."""
