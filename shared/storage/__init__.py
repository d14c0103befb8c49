"""Blob and Table repositories. Azure SDK errors become `shared.errors` here and nowhere else;
nothing above this package imports `azure.*`."""
