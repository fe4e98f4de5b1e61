"""Exceptions raised by the checker."""


class GradientMismatch(AssertionError):
    """Raised by :func:`gradverify.assert_grad` when the verdict is not "pass"; the message is the result's report."""

    def __init__(self, result):
        super().__init__(str(result))
        self.result = result


class UncheckableFunction(ValueError):
    """The function cannot be checked as given (its derivative would not be meaningful)."""


class NondeterministicFunction(UncheckableFunction):
    """Two calls on identical inputs returned different outputs."""


class MutatedInput(UncheckableFunction):
    """The function wrote into one of its inputs."""
