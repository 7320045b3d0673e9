"""edgefiles: a content-addressed, replicated file node speaking the Actyx Files API and IPFS."""

__version__ = "0.1.0"
