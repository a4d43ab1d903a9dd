//! Test support: run a test body in a private network namespace (root
//! tests). Fails when CI is set and the test cannot run; skips otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::net::netlink::Socket;
use std::io;
use std::process::Command;

/// Run `body` on a new thread inside a fresh network namespace of its
/// own. Fails when the test cannot run and `CI` is set; otherwise skips
/// with a message.
pub(crate) fn in_private_netns(test: &str, body: impl FnOnce() + Send + 'static) {
    let cannot_run = |why: String| {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: cannot run root netlink test under CI: {why}");
        }
        eprintln!("{test}: skipped: {why}");
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return cannot_run("needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return cannot_run("the `ip` command (iproute2) is missing".into());
    }
    let handle = std::thread::spawn(move || -> Result<(), String> {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only the
        // calling thread (this one, which we own and which ends with the
        // test) into a new network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                io::Error::last_os_error()
            ));
        }
        // Guard: never touch the host's interfaces. A fresh namespace
        // holds only `lo`.
        let links = Socket::open().unwrap().links().unwrap();
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["lo"], "not in a fresh network namespace");
        body();
        Ok(())
    });
    match handle.join() {
        Ok(Ok(())) => {}
        Ok(Err(why)) => cannot_run(why),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
