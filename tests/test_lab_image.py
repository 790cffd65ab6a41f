"""The labs' image recipes: the names of cached images follow what goes into them,
and a cache keeps only the current recipe's root filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbappliance.lab import image, vmimage


def test_the_vm_image_follows_the_container_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    tag, name, vm = image.image_tag(), image.tarball_name(), vmimage.digest()
    assert name == f"{tag.rsplit(':', 1)[1]}.tar.zst"
    with monkeypatch.context() as m:  # the VM layer's packages: the VM image only
        m.setattr(vmimage, "VM_PACKAGES", (*vmimage.VM_PACKAGES, "tcpdump"))
        assert vmimage.digest() != vm and image.image_tag() == tag
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "tcpdump"))
    assert image.image_tag() != tag and image.tarball_name() != name
    assert vmimage.digest() != vm


def test_prune_keeps_the_current_root_filesystem_only(tmp_path: Path) -> None:
    for name in ("old.tar.zst", "current.tar.zst", "notes.txt"):
        (tmp_path / name).write_text(name)
    image.prune_tarballs(tmp_path, "current.tar.zst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.tar.zst", "notes.txt"]
    image.prune_tarballs(tmp_path / "missing", "current.tar.zst")  # no cache yet: nothing to do


def test_a_logged_step_appends_its_output_and_raises_when_it_fails(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    image.run_logged(["sh", "-c", "echo one; echo two >&2"], log)
    image.run_logged(["echo", "three"], log)
    assert log.read_text() == "one\ntwo\nthree\n"
    with pytest.raises(Exception, match="returned non-zero exit status 3"):
        image.run_logged(["sh", "-c", "exit 3"], log)
