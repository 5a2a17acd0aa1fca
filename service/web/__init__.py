"""The web layer: the Starlette application, its routes and the uvicorn server around it.

The only package that imports starlette or uvicorn; everything below it is plain Python and Redis.
"""
