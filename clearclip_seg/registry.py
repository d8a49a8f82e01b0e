"""Components picked by name (methods, post-processors): one small registry class.

A registry maps names to classes through a class decorator, lists its names,
and resolves a name or a ``dict(type=NAME, **options)`` with one-line errors
naming the config key; the options are checked against the class's
constructor keywords, so a typo is an error and not a silently ignored value.
"""
import inspect
from typing import Callable, Dict, List, Optional

from .options import check_keys


def keyword_options(cls) -> List[str]:
    """A component's constructor keywords, in order (``self`` and ``key``, the error-message prefix, left out)."""
    params = inspect.signature(cls.__init__).parameters
    return [n for n, p in params.items() if n not in ('self', 'key')
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


class Registry:
    """Name -> class, for one kind of component.

    Args:
        what: the kind, as error messages say it (``'method'``).
        key: the config key of a component's dict (``'model.method'``).
        name_attr: the class attribute that receives the registered name.
        load: imports the shipped components (their modules register on import);
            called before names are listed or looked up.
    """

    def __init__(self, what: str, key: str, name_attr: str, load: Optional[Callable[[], None]] = None):
        self.what, self.key, self.name_attr = what, key, name_attr
        self._load = load
        self._classes: Dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: make a class buildable by ``type=name``."""
        def wrap(cls):
            if name in self._classes and self._classes[name] is not cls:
                raise KeyError(f"{self.what} '{name}' is registered twice")
            self._classes[name] = cls
            setattr(cls, self.name_attr, name)
            return cls
        return wrap

    def names(self) -> List[str]:
        """The registered names, sorted."""
        if self._load is not None:
            self._load()
        return sorted(self._classes)

    def get(self, name, key: Optional[str] = None) -> type:
        """The class registered as ``name``; a one-line error naming ``key.type`` otherwise."""
        names = self.names()
        if name not in self._classes:
            raise ValueError(f'unknown {self.what} {name!r} ({key or self.key}.type): expected one of {names}')
        return self._classes[name]

    def check_options(self, cls, options: dict, key: str) -> None:
        """Every option is a constructor keyword of ``cls`` (errors name ``key``)."""
        check_keys(options, keyword_options(cls), key)
