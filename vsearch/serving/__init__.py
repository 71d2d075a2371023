"""The library's part of the online path: safe image fetching and the metadata store."""
