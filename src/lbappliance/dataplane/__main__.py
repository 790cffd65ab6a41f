"""``python -m lbappliance.dataplane`` (the same group as ``lbappliance dataplane``)."""

from lbappliance.dataplane.cli import dataplane

dataplane()
