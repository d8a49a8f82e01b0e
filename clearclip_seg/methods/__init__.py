"""Training-free dense methods, registered by name (see ``registry.py``).

Importing this package registers every method shipped with the project.
"""
from .registry import DenseMethod, build_method, get_method_class, list_methods, register_method
from . import last_block  # noqa: F401,E402  (registration)
from . import naclip, sclip  # noqa: F401,E402  (registration)
from . import gem, scclip  # noqa: F401,E402  (registration)
from . import proxyclip  # noqa: F401,E402  (registration)
from . import resclip  # noqa: F401,E402  (registration)
from . import itaclip, itaclip_text  # noqa: F401,E402  (registration: the method and its text head)
from . import lposs  # noqa: F401,E402  (registration)
from . import trident  # noqa: F401,E402  (registration)
from . import cliptrase  # noqa: F401,E402  (registration)
from . import maskclip_dinoiser  # noqa: F401,E402  (registration)

__all__ = ['DenseMethod', 'build_method', 'get_method_class', 'list_methods', 'register_method']
