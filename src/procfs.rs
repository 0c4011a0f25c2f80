//! What a process has used, read from `/proc` (Linux): CPU time, resident memory,
//! open file descriptors and when it started. The load tool reads other processes'
//! (`/proc/<pid>`), the metrics of both binaries their own (`/proc/self`).

use std::io;
use std::time::{Duration, SystemTime};

/// What a process has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User plus system CPU time, seconds.
    pub cpu_secs: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// [`Usage`] and more, of the process itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Own {
    pub usage: Usage,
    /// File descriptors open now.
    pub open_fds: u64,
    /// The soft limit on them.
    pub max_fds: Option<u64>,
    /// When it started, seconds since the Unix epoch.
    pub start_time_secs: f64,
}

fn sysconf(name: libc::c_int, otherwise: f64) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let value = unsafe { libc::sysconf(name) };
    if value > 0 { value as f64 } else { otherwise }
}

fn ticks_per_second() -> f64 {
    sysconf(libc::_SC_CLK_TCK, 100.0)
}

/// The fields of `/proc/<dir>/stat` after the command name (which is in
/// parentheses and may hold spaces): index 0 is the state.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

fn field(fields: &[&str], i: usize) -> u64 {
    fields
        .get(i)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0)
}

fn read(dir: &str) -> io::Result<(Usage, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{dir}/stat"))?;
    let fields: Vec<String> = stat_fields(&stat).into_iter().map(str::to_owned).collect();
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    // utime and stime are fields 14 and 15 of stat(5), 11 and 12 here.
    let cpu_secs = (field(&refs, 11) + field(&refs, 12)) as f64 / ticks_per_second();
    let status = std::fs::read_to_string(format!("/proc/{dir}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let usage = Usage {
        cpu_secs,
        rss_bytes: rss_kib * 1024,
    };
    Ok((usage, fields))
}

/// The usage of process `pid`.
///
/// # Errors
/// When `/proc/<pid>` cannot be read (the process is gone).
pub fn usage(pid: u32) -> io::Result<Usage> {
    read(&pid.to_string()).map(|(usage, _)| usage)
}

/// This process's usage, descriptors and start time.
///
/// # Errors
/// When `/proc/self` cannot be read (not Linux).
pub fn own() -> io::Result<Own> {
    let (usage, fields) = read("self")?;
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let open_fds = open_fds()?.count() as u64;
    // starttime, field 22 of stat(5), is in ticks since boot.
    let since_boot = field(&refs, 19) as f64 / ticks_per_second();
    let start_time_secs = boot_time()? + since_boot;
    Ok(Own {
        usage,
        open_fds,
        max_fds: max_fds(),
        start_time_secs,
    })
}

/// The numbers of this process's open descriptors (the listing's own included).
fn open_fds() -> io::Result<impl Iterator<Item = i32>> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()))
}

/// When the machine booted, seconds since the Unix epoch (`btime` of `/proc/stat`).
fn boot_time() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| io::Error::other("/proc/stat has no btime"))
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Seconds since the Unix epoch of `at`.
pub fn unix_secs(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let before = usage(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let after = usage(std::process::id()).unwrap();
        assert!(after.rss_bytes > 1024 * 1024, "{after:?}");
        assert!(after.cpu_secs >= before.cpu_secs);
    }

    #[test]
    fn reads_its_own_descriptors_and_start() {
        use std::os::fd::AsRawFd;
        // Other tests of this binary open and close descriptors meanwhile, so
        // the count may move either way: the opened one must be among those
        // counted.
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let file_fd = file.as_raw_fd();
        let counted: Vec<i32> = open_fds().unwrap().collect();
        let after = own().unwrap();
        drop(file);
        assert!(
            counted.contains(&file_fd),
            "fd {file_fd} not in {counted:?}"
        );
        assert!(after.open_fds >= 1, "{after:?}");
        assert!(after.max_fds.is_some_and(|m| m >= after.open_fds));
        // Started in the last hour, not in the future.
        let now = unix_secs(SystemTime::now());
        assert!(
            after.start_time_secs <= now + 1.0 && after.start_time_secs > now - 3600.0,
            "started {} now {now}",
            after.start_time_secs
        );
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0 1 0 3333 0 0";
        let fields = stat_fields(stat);
        assert_eq!(fields[0], "S");
        assert_eq!(field(&fields, 11), 111);
        assert_eq!(field(&fields, 12), 222);
        assert_eq!(field(&fields, 19), 3333);
    }
}
