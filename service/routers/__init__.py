"""The API's routes, one ``APIRouter`` per area: ``scoring``, ``models``, ``health`` (with ``/metrics``).

``service.api.create_app`` includes them in that order (the order of the OpenAPI paths).
"""
