"""Figures, each in its own module: what the two columns learn (the paper's Figure 3, conv1
kernels per column with their colour scores, in filters.py and curve.py; Figure 4, nearest
neighbours in the last hidden layer, in neighbours.py) and a run's loss and error curves
(training.py). Only figures need matplotlib, imported when one is drawn (plot.py); the colour
scores the trainer logs are in twocol.metrics."""
