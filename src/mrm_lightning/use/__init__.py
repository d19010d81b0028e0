"""A trained model in use: adapt users to profiles, score responses (:mod:`.inference`), the
profile store, the TRL reward function and the HTTP server.
"""
