"""Which models exist (``models.json``), where their files live, downloads and damage checks."""
