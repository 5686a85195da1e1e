"""Sub-commands of the ``josh-hf`` command line, one module each."""
