"""Export to other frameworks and hardware: NIR (docs/nir.md). Needs the ``nir`` package."""
from .nir import NIRExportError as NIRExportError
from .nir import NIRImportError as NIRImportError
from .nir import from_nir as from_nir
from .nir import to_nir as to_nir
