"""galearn.survey: real data in.

Catalogue columns and cuts (:mod:`~galearn.survey.catalog`), stamps from
survey mosaics through their WCS (:mod:`~galearn.survey.cutouts`), stamps from
folders of RGB images (:mod:`~galearn.survey.images`). The intensity
stretches they apply live in :mod:`galearn.imaging`.
"""

from .catalog import *  # noqa: F401,F403
from .catalog import __all__ as _catalog_all
from .cutouts import *  # noqa: F401,F403
from .cutouts import __all__ as _cutouts_all
from .images import *  # noqa: F401,F403
from .images import __all__ as _images_all
from .uvj import *  # noqa: F401,F403
from .uvj import __all__ as _uvj_all

__all__ = [*_catalog_all, *_cutouts_all, *_images_all, *_uvj_all]
