from lbappliance.nic.cli import nic

nic(prog_name="lbappliance nic")
