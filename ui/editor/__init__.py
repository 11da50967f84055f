"""The pipeline editor: the spec document, its commands and the views of it."""
