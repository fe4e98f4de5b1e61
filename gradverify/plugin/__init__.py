"""pytest integration: the ``gradcheck`` and ``grad_regression`` fixtures (see ``pytest_plugin``)."""
