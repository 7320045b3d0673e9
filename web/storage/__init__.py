"""The Storage API facade (`/api/v1/storage`)."""
