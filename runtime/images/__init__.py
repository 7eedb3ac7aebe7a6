"""Images: references, the registry client, layer unpacking, the store and pulls."""
