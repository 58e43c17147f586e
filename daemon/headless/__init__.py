"""The command line's own paths: image files in and out, the edit in-process or through a daemon,
the demo."""
