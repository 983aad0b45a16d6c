"""Data: the embedded mmdigits data set, manifests for users' own data, feature caching."""
