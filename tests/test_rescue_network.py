"""The rescue system's network script (templates/network.sh.j2 + udhcpc.sh.j2) run for real in
network namespaces this test makes: DHCP from dnsmasq over a veth pair (busybox udhcpc, as in the
rescue system), static ip= settings, and the cases that leave the network alone. Each run gets its
own mount namespace with a private /run and /etc/resolv.conf, so the host's stay untouched."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import sh

from mkrec.context import REPO_ROOT
from mkrec.rescue.render import render

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        shutil.which("dnsmasq") is None, reason="needs dnsmasq (apt-get install dnsmasq-base)"
    ),
    pytest.mark.skipif(
        not Path("/bin/busybox").is_file(), reason="needs busybox (apt-get install busybox-static)"
    ),
]

SERVER_IP = "10.91.8.1"
LEASED = r"mkrec: network on eth0: 10\.91\.8\.(5\d|60)/24"  # dnsmasq's --dhcp-range below


@dataclass(frozen=True)
class Lan:
    server_ns: str
    client_ns: str
    mac: str  # of the client's eth0
    scripts: Path  # network + udhcpc, as /etc/mkrec/ holds them
    tmp: Path

    def stop_clients(self) -> None:
        """udhcpc stays to renew its lease: stop the ones in the client namespace, drop the address."""
        for pid in sh("ip", "netns", "pids", self.client_ns).split():
            subprocess.run(["kill", pid], check=False)
        sh("ip", "-n", self.client_ns, "addr", "flush", "dev", "eth0")
        sh("ip", "-n", self.client_ns, "link", "set", "eth0", "down")

    def run(self, cmdline: str, setting: str = "auto", then: str = "") -> str:
        """The network script in a fresh client with this kernel command line, then `then`."""
        self.stop_clients()
        script = self.scripts / setting / "network"
        resolv = self.tmp / "resolv.conf"
        resolv.write_text("# untouched\n")
        inner = (
            f"mount -t tmpfs tmpfs /run && mount --bind {resolv} /etc/resolv.conf && "
            f"MKREC_CMDLINE={shlex.quote(cmdline)} {script}; {then}"
        )
        env = {**os.environ, "PATH": f"{self.tmp / 'bin'}:{os.environ['PATH']}"}
        argv = ["ip", "netns", "exec", self.client_ns, "unshare", "-m", "sh", "-c", inner]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
        return done.stdout + done.stderr


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    tag = str(os.getpid())
    server, client = f"mkrec-srv-{tag}", f"mkrec-cli-{tag}"
    sh("ip", "netns", "add", server)
    sh("ip", "netns", "add", client)
    dnsmasq = None
    try:
        sh(
            "ip",
            "-n",
            server,
            "link",
            "add",
            "veth-s",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            client,
        )
        sh("ip", "-n", server, "addr", "add", f"{SERVER_IP}/24", "dev", "veth-s")
        sh("ip", "-n", server, "link", "set", "veth-s", "up")
        mac = (sh("ip", "-n", client, "-o", "link", "show", "eth0")).split("link/ether ")[1][:17]
        dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", server, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
             "--interface=veth-s", "--bind-interfaces", "--dhcp-range=10.91.8.50,10.91.8.60,255.255.255.0,1h",
             f"--dhcp-option=option:router,{SERVER_IP}", f"--dhcp-option=option:dns-server,{SERVER_IP}",
             f"--dhcp-leasefile={tmp_path / 'leases'}", "--user=root", "--pid-file="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "udhcpc").symlink_to("/bin/busybox")  # the rescue system's udhcpc
        scripts = tmp_path / "etc-mkrec"
        for setting in ("auto", "dhcp", "off"):
            (scripts / setting).mkdir(parents=True)
            for template, name in (("network.sh.j2", "network"), ("udhcpc.sh.j2", "udhcpc")):
                (scripts / setting / name).write_text(
                    render(REPO_ROOT / "templates", template, network=setting)
                )
                (scripts / setting / name).chmod(0o755)
        lan = Lan(server, client, mac, scripts, tmp_path)
        yield lan
        lan.stop_clients()
    finally:
        if dnsmasq is not None:
            dnsmasq.kill()
            dnsmasq.wait()
        for ns in (client, server):
            subprocess.run(["ip", "netns", "del", ns], check=False)


SHOW = "ip -4 -o addr show dev eth0; ip route; cat /etc/resolv.conf"


def test_boot_from_the_network_takes_a_dhcp_lease_on_the_booting_nic(lan: Lan) -> None:
    out = lan.run(f"quiet BOOTIF=01-{lan.mac.replace(':', '-')} mkrec.run=shell", then=SHOW)
    assert "mkrec: DHCP on eth0" in out and re.search(LEASED, out), out
    assert f"default via {SERVER_IP} dev eth0" in out and f"nameserver {SERVER_IP}" in out, out


def test_grub_style_bootif_and_ip_dhcp_and_the_setting_take_a_lease_too(lan: Lan) -> None:
    for cmdline, setting in ((f"BOOTIF=01-{lan.mac}", "auto"), ("ip=dhcp", "auto"), ("quiet", "dhcp")):
        out = lan.run(cmdline, setting, then=SHOW)
        assert re.search(LEASED, out), (cmdline, setting, out)


def test_static_ip_settings(lan: Lan) -> None:
    out = lan.run(f"ip=10.91.8.20::{SERVER_IP}:255.255.255.0::eth0:off:10.91.8.3", then=SHOW)
    assert "mkrec: network on eth0: 10.91.8.20/24" in out, out
    assert f"default via {SERVER_IP} dev eth0" in out and "nameserver 10.91.8.3" in out, out
    assert "DHCP" not in out, out


def test_no_network_unless_asked(lan: Lan) -> None:
    for cmdline, setting in (("quiet", "auto"), (f"BOOTIF=01-{lan.mac}", "off"), ("ip=off", "dhcp")):
        out = lan.run(cmdline, setting, then=SHOW)
        assert "inet " not in out and "mkrec:" not in out and "# untouched" in out, (cmdline, setting, out)
