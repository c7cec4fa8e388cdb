"""The scenarios: ``r<NN>_<slug>.py`` modules, each with ``ID``, ``TITLE`` and ``run(ctx)``."""
