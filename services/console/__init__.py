"""The staff console: server-rendered pages at ``/console``, served by the API process."""
