"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class UserError(ValueError):
    """Bad input. The message names the problem and the fix. A ValueError, as scikit-learn users expect of
    estimator misuse (a bad array, an unfitted model, a bad hyperparameter)."""
