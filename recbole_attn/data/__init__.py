"""Data around RecBole's datasets: ``checks`` reads atomic files before
RecBole does, ``rows`` builds the all-positions training rows and seen-item
filters, ``packing`` lays a batch's windows end to end, ``fixtures`` writes tiny datasets for tests and quick checks."""
