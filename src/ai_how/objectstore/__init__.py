"""Object stores (file://, s3://) and checksum-verified sync."""

from ai_how.objectstore.base import ObjectStore, ObjectStoreError, StoreURI, open_store

__all__ = ["ObjectStore", "ObjectStoreError", "StoreURI", "open_store"]
