"""ethtool 6.1 text as printed on real hosts (virtio-net on this machine, a veth, ixgbe)."""

from lbappliance.nic.ethtool import (
    parse_channels,
    parse_driver,
    parse_features,
    parse_flow_hash,
    parse_indirection,
    parse_rings,
)
from lbappliance.nic.facts import Channels, Feature

VIRTIO_CHANNELS = """Channel parameters for eth0:
Pre-set maximums:
RX:\t\tn/a
TX:\t\tn/a
Other:\t\tn/a
Combined:\t1
Current hardware settings:
RX:\t\tn/a
TX:\t\tn/a
Other:\t\tn/a
Combined:\t1
"""

VETH_CHANNELS = """Channel parameters for va:
Pre-set maximums:
RX:\t\t4
TX:\t\t4
Other:\t\tn/a
Combined:\tn/a
Current hardware settings:
RX:\t\t2
TX:\t\t2
Other:\t\tn/a
Combined:\tn/a
"""

VIRTIO_RING = """Ring parameters for eth0:
Pre-set maximums:
RX:\t\t256
RX Mini:\tn/a
RX Jumbo:\tn/a
TX:\t\t256
Current hardware settings:
RX:\t\t256
RX Mini:\tn/a
RX Jumbo:\tn/a
TX:\t\t256
RX Buf Len:\t\tn/a
CQE Size:\t\tn/a
TX Push:\toff
TCP data split:\tn/a
"""

VIRTIO_RXFH = """RX flow hash indirection table for eth0 with 1 RX ring(s):
Operation not supported
RSS hash key:
Operation not supported
RSS hash function:
    toeplitz: on
    xor: off
    crc32: off
"""

IXGBE_RXFH = """RX flow hash indirection table for eth2 with 4 RX ring(s):
    0:      0     1     2     3     0     1     2     3
    8:      0     1     2     3     0     1     2     3
RSS hash key:
6d:5a:56:da:25:5b:0e:c2:41:67:25:3d:43:a3:8f:b0:d0:ca:2b:cb
RSS hash function:
    toeplitz: on
    xor: off
    crc32: off
"""


def test_channels() -> None:
    virtio = parse_channels(VIRTIO_CHANNELS)
    assert virtio == Channels(max_combined=1, combined=1)
    assert (virtio.mode, virtio.maximum, virtio.current) == ("combined", 1, 1)
    veth = parse_channels(VETH_CHANNELS)
    assert veth == Channels(max_rx=4, max_tx=4, rx=2, tx=2)
    assert (veth.mode, veth.maximum, veth.current) == ("rxtx", 4, 2)
    assert parse_channels(None) is None
    assert parse_channels("netlink error: Operation not supported\n") is None


def test_rings() -> None:
    rings = parse_rings(VIRTIO_RING)
    assert rings is not None
    assert (rings.max_rx, rings.max_tx, rings.rx, rings.tx) == (256, 256, 256, 256)
    assert parse_rings(None) is None


def test_features() -> None:
    text = (
        "Features for eth0:\nrx-checksumming: on [fixed]\ntx-checksumming: on\n"
        "\ttx-checksum-ipv4: off [fixed]\nlarge-receive-offload: off [fixed]\n"
        "rx-gro-hw: on [fixed]\nrx-gro-list: off\ngeneric-receive-offload: on [requested off]\n"
    )
    features = parse_features(text)
    assert features["large-receive-offload"] == Feature(on=False, fixed=True)
    assert features["rx-gro-hw"] == Feature(on=True, fixed=True)
    assert features["rx-gro-list"] == Feature(on=False, fixed=False)
    assert features["tx-checksum-ipv4"] == Feature(on=False, fixed=True)
    assert features["generic-receive-offload"] == Feature(on=True, fixed=False)


def test_indirection() -> None:
    assert parse_indirection(VIRTIO_RXFH) is None
    assert parse_indirection(IXGBE_RXFH) == (0, 1, 2, 3) * 4
    assert parse_indirection(None) is None


def test_flow_hash() -> None:
    four_tuple = (
        "TCP over IPV4 flows use these fields for computing Hash flow key:\nIP SA\nIP DA\n"
        "L4 bytes 0 & 1 [TCP/UDP src port]\nL4 bytes 2 & 3 [TCP/UDP dst port]\n\n"
    )
    assert parse_flow_hash(four_tuple) == "sdfn"
    assert (
        parse_flow_hash(
            "UDP over IPV4 flows use these fields for computing Hash flow key:\nIP SA\nIP DA\n\n"
        )
        == "sd"
    )
    none = "TCP over IPV4 flows use these fields for computing Hash flow key:\nNone\n"
    assert parse_flow_hash(none) == ""
    assert (
        parse_flow_hash("Cannot get RX network flow hashing options: Operation not supported")
        is None
    )


def test_driver() -> None:
    text = "driver: virtio_net\nversion: 1.0.0\nfirmware-version: \nbus-info: 0000:00:03.0\n"
    assert parse_driver(text) == ("virtio_net", "0000:00:03.0")
