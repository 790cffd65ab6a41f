"""L4 data plane: Maglev tables, the XDP forwarder's control plane, its CLI."""
