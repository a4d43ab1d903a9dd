//! Thin wrappers over the `*at` system calls: every path below a set's root is reached from an
//! open directory, one component at a time, never following a symlink.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// `-1` to the last OS error, anything else to `Ok`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retries `f` while it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// `openat(dir, name, flags | O_CLOEXEC | O_NOFOLLOW, mode)`.
pub(crate) fn open_at(
    dir: BorrowedFd<'_>,
    name: &str,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let c = cstr(name.as_bytes())?;
    let fd = retry(|| {
        // SAFETY: `c` is a valid NUL-terminated string living across the call, and `dir` is an
        // open descriptor; openat has no other memory preconditions.
        check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                mode as libc::c_uint,
            )
        })
    })?;
    // SAFETY: openat just returned this descriptor, so nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory (following `path` if it is a symlink: the root is trusted).
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    let fd = retry(|| {
        // SAFETY: `c` is a valid NUL-terminated string living across the call.
        check(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })
    })?;
    // SAFETY: open just returned this descriptor, so nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the file at the relative path `rel` below `root` for reading, in one call that the
/// kernel keeps beneath `root` and off every symlink on the way (`openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): `ELOOP` for a symlink anywhere, `EXDEV` for a
/// way out. `Ok(None)` where `openat2` is not offered (a kernel before 5.6, or a seccomp
/// filter that refuses it), for the caller to open another way.
pub(crate) fn open_beneath(root: BorrowedFd<'_>, rel: &str) -> io::Result<Option<OwnedFd>> {
    use nix::errno::Errno;
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    // EAGAIN: a rename elsewhere raced the resolution, which the kernel then refuses to
    // vouch for; another try settles it.
    let mut tries = 0;
    loop {
        match openat2(root, rel, how) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            Err(Errno::ENOSYS | Errno::EPERM) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Opens the directory `name` in `dir`; refuses symlinks (`ELOOP`) and non-directories.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// The metadata of `name` in `dir` itself (a symlink is not followed), `None` if absent.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<Metadata>> {
    match open_at(dir, name, libc::O_PATH, 0) {
        Ok(fd) => File::from(fd).metadata().map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string living across the call.
    retry(|| check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) }))
        .map(drop)
}

/// Removes `name` (a directory if `dir_flag`) from `dir`.
pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &str, is_dir: bool) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated string living across the call.
    retry(|| check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })).map(drop)
}

/// Renames `from` over `to`, both in `dir`.
pub(crate) fn rename_at(dir: BorrowedFd<'_>, from: &str, to: &str) -> io::Result<()> {
    let (f, t) = (cstr(from.as_bytes())?, cstr(to.as_bytes())?);
    retry(|| {
        // SAFETY: both strings are valid, NUL-terminated and live across the call.
        check(unsafe { libc::renameat(dir.as_raw_fd(), f.as_ptr(), dir.as_raw_fd(), t.as_ptr()) })
    })
    .map(drop)
}

pub(crate) fn symlink_at(target: &str, dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let (t, n) = (cstr(target.as_bytes())?, cstr(name.as_bytes())?);
    // SAFETY: both strings are valid, NUL-terminated and live across the call.
    retry(|| check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) })).map(drop)
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn lchown_at(dir: BorrowedFd<'_>, name: &str, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    retry(|| {
        // SAFETY: `c` is a valid NUL-terminated string living across the call.
        check(unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                c.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    })
    .map(drop)
}

/// Sets the mtime of `name` itself (not a symlink's target), leaving its atime.
pub(crate) fn set_mtime_at(dir: BorrowedFd<'_>, name: &str, s: i64, ns: u32) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: s as libc::time_t,
            tv_nsec: i64::from(ns) as libc::c_long,
        },
    ];
    retry(|| {
        // SAFETY: `c` is a valid NUL-terminated string and `times` an array of two timespecs,
        // both living across the call.
        check(unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    })
    .map(drop)
}

pub(crate) fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fsync takes any descriptor and touches no memory of ours.
    retry(|| check(unsafe { libc::fsync(fd.as_raw_fd()) })).map(drop)
}

/// Removes `name` from `dir` and, if it is a directory, everything below it, never following a
/// symlink.
pub(crate) fn remove_tree_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    remove_tree_depth(dir, name, 0)
}

fn remove_tree_depth(dir: BorrowedFd<'_>, name: &str, depth: usize) -> io::Result<()> {
    use std::os::fd::AsFd;
    let Some(meta) = stat_at(dir, name)? else {
        return Ok(());
    };
    if !meta.is_dir() {
        return unlink_at(dir, name, false);
    }
    if depth > 256 {
        return Err(io::Error::other("directory nesting too deep to remove"));
    }
    let sub = open_dir_at(dir, name)?;
    // Read the names first: removing while iterating a directory stream may skip entries.
    let names = read_dir_names(sub.as_fd())?;
    for n in names {
        remove_tree_depth(sub.as_fd(), &n, depth + 1)?;
    }
    unlink_at(dir, name, true)
}

/// The names in an open directory (without `.` and `..`).
fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    // Go through /proc/self/fd to let std read the directory: the descriptor pins the directory
    // itself, so no path is re-resolved.
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&path)? {
        let name = entry?.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| io::Error::other("file name is not UTF-8"))?
            .to_string();
        names.push(name);
    }
    Ok(names)
}
