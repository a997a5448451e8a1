"""Embedded default data (shipped inside installed packages, no download at run time).

* :mod:`.mni`: the MNI152 2009 T1 template that nilearn ships, with a derived three-class tissue labelmap
  (background / grey matter / white matter) and the held-out validation slab (``Resources/docs/demo-data.md``).
"""
