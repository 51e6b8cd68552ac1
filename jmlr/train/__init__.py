"""Training: the JMLR loss and the training loop (``jmlr train``)."""
