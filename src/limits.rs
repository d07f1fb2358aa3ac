//! Process limits that decide how many clients berth can hold at once: the
//! open-files limit (raised from the soft to the hard value at startup, as
//! registry:2 does, since systemd hands services a soft limit of 1024) and
//! the connection cap derived from it, so that a flood of connections is
//! refused at the door instead of leaving berth without descriptors for the
//! connections already in.

/// Descriptors kept for what is not a client connection (data files, logs, upstreams).
const RESERVED_FILES: u64 = 256;
/// Descriptors a connection may need at once: its socket and a blob file.
const FILES_PER_CONNECTION: u64 = 2;

/// Raises the soft open-files limit to the hard one; returns the soft limit
/// now in force (`u64::MAX` where it cannot be read).
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return u64::MAX;
    }
    if lim.rlim_cur < lim.rlim_max {
        let mut raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // An unlimited hard limit cannot be the soft one on Linux (nr_open caps it).
        if raised.rlim_cur == libc::RLIM_INFINITY {
            raised.rlim_cur = nr_open().unwrap_or(lim.rlim_cur);
        }
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        } else {
            tracing::warn!(soft = lim.rlim_cur, hard = lim.rlim_max, "could not raise the open-files limit");
        }
    }
    lim.rlim_cur
}

fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open").ok()?.trim().parse().ok()
}

/// How many connections to serve at once: what is configured, but never
/// more than the open-files limit can carry.
pub fn connection_cap(configured: usize, open_files: u64) -> usize {
    let fits = open_files.saturating_sub(RESERVED_FILES) / FILES_PER_CONNECTION;
    configured.min(usize::try_from(fits).unwrap_or(usize::MAX)).max(1)
}

/// Pending connections the listening socket queues before the server accepts
/// them (the kernel caps it at `net.core.somaxconn`, 4096 by default).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Asks for a listen queue of `LISTEN_BACKLOG`. The standard library listens
/// with 128: a burst of new connections past that (a CI fleet starting at
/// once, a flood) overflows it, and the kernel drops the SYNs of the rest,
/// which their clients send again only after a second. Listening again on a
/// listening socket only changes its queue length.
pub fn widen_backlog(listener: &std::net::TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket this process owns; no memory is passed.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue length `ss` reports for a listening socket (its Send-Q).
    fn backlog(l: &std::net::TcpListener) -> u32 {
        let port = l.local_addr().unwrap().port();
        let out = std::process::Command::new("ss").args(["-Hltn", &format!("sport = :{port}")]).output().unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        line.split_whitespace().nth(2).and_then(|q| q.parse().ok()).unwrap_or_else(|| panic!("ss said {line:?}"))
    }

    #[test]
    fn the_listen_queue_is_widened_to_what_the_kernel_allows() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(backlog(&l), 128, "the standard library's queue");
        widen_backlog(&l).unwrap();
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
        assert_eq!(backlog(&l), somaxconn.min(LISTEN_BACKLOG as u32));
    }

    #[test]
    fn the_cap_fits_the_descriptors() {
        assert_eq!(connection_cap(10_000, 1024), 384);
        assert_eq!(connection_cap(10_000, 1_048_576), 10_000);
        assert_eq!(connection_cap(10_000, 100), 1);
        assert_eq!(connection_cap(50, u64::MAX), 50);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = raise_open_files_limit();
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, soft);
        assert!(lim.rlim_cur == lim.rlim_max || lim.rlim_max == libc::RLIM_INFINITY);
    }
}
