//! The package and the image as shipped: the .deb installs, upgrades over
//! itself and purges without a trace, lintian has no error or warning, and
//! the raw disk image boots in qemu to multi-user with hamon active, its
//! configuration written by the first boot from a seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod booted;
mod netns;

use booted::{binary, out_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Both tests rebuild the same output directory (the tree is replaced by a
/// rename): one at a time.
static IMAGE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sh(cmd: &mut Command) -> (bool, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// What a package could leave behind: every path under the directories a
/// package writes, with its type and mode.
const SNAPSHOT: &str = "find /etc /usr /var/lib /run/systemd/system -xdev \
     -not -path '/var/lib/dpkg/*' -not -path '/var/lib/apt/*' \
     -not -path '/var/cache/*' -not -path '/etc/ld.so.cache' \
     -printf '%y %m %p\\n' 2>/dev/null | sort";

#[test]
fn the_deb_installs_upgrades_and_purges_cleanly() {
    if !booted::available() {
        return;
    }
    let _one = IMAGE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tree = booted::tree();
    let (ok, text) = sh(Command::new("bash")
        .arg(repo().join("image/build-deb"))
        .arg("--binary")
        .arg(binary())
        .arg("--out")
        .arg(out_dir()));
    assert!(ok, "build-deb: {text}");
    let deb = PathBuf::from(text.lines().rfind(|l| l.ends_with(".deb")).unwrap().trim());
    // lintian: informational notes only (explained in image/README.md).
    let (_, lint) = sh(Command::new("lintian")
        .args(["--info", "--allow-root"])
        .arg(&deb));
    let findings: Vec<&str> = lint
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(findings.is_empty(), "lintian: {lint}");

    // In an overlay of the appliance tree, not booted: purge what the image
    // installed, take the baseline, then install, upgrade, remove, purge.
    let dir = std::env::temp_dir().join(format!("hamon-deb-{}", std::process::id()));
    let a = booted::Appliance::new("deb-check", "none", &tree, &dir);
    std::fs::copy(&deb, a.root.join("var/tmp/hamon.deb")).unwrap();
    let script = format!(
        "export DEBIAN_FRONTEND=noninteractive
         dpkg --purge hamon >/dev/null
         {SNAPSHOT} > /tmp/before
         dpkg -i /var/tmp/hamon.deb >/dev/null
         test -x /usr/bin/hamon
         test \"$(readlink -f /usr/lib/systemd/system-generators/hamon-generator)\" = /usr/bin/hamon
         test \"$(stat -c %a /etc/hamon/hamon.example.toml)\" = 600
         test -f /usr/share/doc/hamon/README.md
         grep -q '^ConditionPathExists=/etc/hamon/hamon.toml' /usr/lib/systemd/system/hamon.service
         test -f /usr/lib/systemd/system/hamon-firstboot.service
         test -f /usr/lib/udev/rules.d/70-hamon-net.rules
         test -L /etc/systemd/system/multi-user.target.wants/hamon.service
         dpkg -i /var/tmp/hamon.deb >/dev/null
         hamon --version
         # What the agent leaves: state, a configuration written from a seed.
         mkdir -p /var/lib/hamon && echo x > /var/lib/hamon/state.json
         printf 'name = \"a\"\\nrole = \"primary\"\\naddress = \"192.0.2.11\"\\ninterface = \"eth0\"\\n' > /etc/hamon/seed.toml
         hamon config init --seed /etc/hamon/seed.toml
         apt-get remove -y hamon >/dev/null
         test ! -e /usr/bin/hamon
         test -e /etc/hamon/hamon.toml
         apt-get purge -y hamon >/dev/null
         {SNAPSHOT} > /tmp/after
         diff /tmp/before /tmp/after && echo CLEAN"
    );
    let (ok, text) = a.unbooted(&script);
    assert!(
        ok && text.contains("CLEAN"),
        "install/upgrade/purge:\n{text}"
    );
    assert!(text.contains("hamon 0."), "{text}");
}

#[test]
fn the_raw_image_boots_in_qemu_with_hamon_active() {
    if !booted::available() {
        return;
    }
    let _one = IMAGE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = std::time::Instant::now();
    let (ok, text) = sh(Command::new("bash")
        .arg(repo().join("image/build"))
        .arg("--binary")
        .arg(binary())
        .arg("--out")
        .arg(out_dir()));
    assert!(ok, "image/build: {text}");
    eprintln!("image built in {:.0} s", t.elapsed().as_secs_f64());
    // The seed path: the first boot writes hamon.toml, then hamon starts.
    let (ok, text) = sh(Command::new("bash")
        .arg(repo().join("image/qemu-check"))
        .arg(out_dir()));
    assert!(ok, "qemu-check:\n{text}");
    assert!(text.contains("hamon=active"), "{text}");
    eprintln!(
        "{}",
        text.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
}
