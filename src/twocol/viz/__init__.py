"""What the two columns learn: the paper's Figure 3 (conv1 kernels per column and how
colour-specific they are) and Figure 4 (nearest neighbours in the last hidden layer).

Figures need matplotlib; the scores do not, so the trainer can log them every epoch."""
from .colour import column_scores, colour_specialisation

__all__ = ["column_scores", "colour_specialisation"]
