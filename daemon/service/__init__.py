"""The daemon: the ZeroMQ socket loop, the job queue, the worker that runs edits, logs and keys."""
