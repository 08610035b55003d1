"""Integrations with other libraries, each imported only when used
(``import lowbit.integrations.transformers``)."""
