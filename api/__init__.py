"""Generated CRI runtime.v1 stubs (see VERSION); regenerate with hack/update-api."""
