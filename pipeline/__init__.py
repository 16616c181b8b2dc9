"""gpo: asynchronous GPO prompt optimization. The public surface is re-exported here."""
