"""Developer tools kept out of the daemon: the embedded model's trainer and the face-model
converter. Import name ``gimp_draggan_tools``; nothing in ``gimp_draggan`` imports it."""
