//! What the scenarios measure besides their own counters: CPU time and
//! resident memory of a process (from `/proc`), and latency histograms.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Error;

/// Clock ticks per second in `/proc/PID/stat`: `USER_HZ`, which Linux fixes
/// at 100 in its user-space ABI on x86 and arm (the resolution is 10 ms).
const USER_HZ: u64 = 100;

/// A process: this one, or the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// The generator itself (`/proc/self`).
    Current,
    /// Another process.
    Other(u32),
}

impl Pid {
    fn proc_path(self, file: &str) -> String {
        match self {
            Pid::Current => format!("/proc/self/{file}"),
            Pid::Other(pid) => format!("/proc/{pid}/{file}"),
        }
    }

    fn read(self, file: &str) -> Result<String, Error> {
        let path = self.proc_path(file);
        std::fs::read_to_string(&path).map_err(|source| Error::Proc { path, source })
    }

    /// User plus system CPU time of every thread of the process so far
    /// (`utime + stime` of `/proc/PID/stat`, 10 ms resolution).
    pub fn cpu_time(self) -> Result<Duration, Error> {
        let stat = self.read("stat")?;
        parse_cpu(&stat).ok_or_else(|| Error::ProcFormat(self.proc_path("stat")))
    }

    /// Read and write system calls so far (`syscr` and `syscw` of
    /// `/proc/PID/io`). Linux counts only the calls that go through the VFS:
    /// `read`, `readv`, `write`, `writev`. libuv (Node) uses those for
    /// sockets, and so does tokio for vectored writes (`writev`, what a
    /// sockeye server writes with); Rust's std reads a `TcpStream` with
    /// `recv` and writes a single buffer with `send`, which are not counted.
    pub fn io_syscalls(self) -> Result<Syscalls, Error> {
        let io = self.read("io")?;
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        match (field("syscr:"), field("syscw:")) {
            (Some(reads), Some(writes)) => Ok(Syscalls { reads, writes }),
            _ => Err(Error::ProcFormat(self.proc_path("io"))),
        }
    }

    /// Resident memory (`VmRSS` of `/proc/PID/status`), in KiB.
    pub fn rss_kib(self) -> Result<u64, Error> {
        let status = self.read("status")?;
        parse_rss(&status).ok_or_else(|| Error::ProcFormat(self.proc_path("status")))
    }
}

/// `utime + stime` from the text of `/proc/PID/stat`. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_cpu(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Read and write system calls of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Syscalls {
    /// `read`-family calls.
    pub reads: u64,
    /// `write`-family calls.
    pub writes: u64,
}

impl Syscalls {
    fn since(self, before: Syscalls) -> Syscalls {
        Syscalls {
            reads: self.reads.saturating_sub(before.reads),
            writes: self.writes.saturating_sub(before.writes),
        }
    }
}

/// CPU time and system calls of the generator and (when known) of the
/// server, between a [`CpuMeter::start`] and [`CpuMeter::stop`].
#[derive(Debug)]
pub(crate) struct CpuMeter {
    started: Instant,
    client: (Duration, Syscalls),
    server: Option<(u32, Duration, Syscalls)>,
}

/// CPU used during a measurement.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    /// Wall-clock seconds measured.
    pub wall_s: f64,
    /// Generator CPU seconds (user + system, all its threads).
    pub client_cpu_s: f64,
    /// Generator read/write system calls (see [`Pid::io_syscalls`]: the
    /// generator's `recv`/`send` are not among them).
    pub client_syscalls: Syscalls,
    /// Server CPU seconds, when `--server-pid` was given.
    pub server_cpu_s: Option<f64>,
    /// Server read/write system calls, when `--server-pid` was given (see
    /// [`Pid::io_syscalls`] for what is counted).
    pub server_syscalls: Option<Syscalls>,
}

impl CpuUse {
    /// The generator's CPU time as a share of one core (1.0 = one core busy).
    pub fn client_cores(&self) -> f64 {
        ratio(self.client_cpu_s, self.wall_s)
    }

    /// The server's CPU time as a share of one core.
    pub fn server_cores(&self) -> Option<f64> {
        self.server_cpu_s.map(|s| ratio(s, self.wall_s))
    }
}

impl CpuMeter {
    pub(crate) fn start(server: Option<u32>) -> Result<Self, Error> {
        let server = match server {
            Some(pid) => {
                let p = Pid::Other(pid);
                Some((pid, p.cpu_time()?, p.io_syscalls()?))
            }
            None => None,
        };
        Ok(CpuMeter {
            started: Instant::now(),
            client: (Pid::Current.cpu_time()?, Pid::Current.io_syscalls()?),
            server,
        })
    }

    pub(crate) fn stop(&self) -> Result<CpuUse, Error> {
        let wall_s = self.started.elapsed().as_secs_f64();
        let client_cpu = Pid::Current.cpu_time()?.saturating_sub(self.client.0);
        let client_syscalls = Pid::Current.io_syscalls()?.since(self.client.1);
        let (server_cpu_s, server_syscalls) = match self.server {
            Some((pid, cpu, calls)) => {
                let p = Pid::Other(pid);
                (
                    Some(p.cpu_time()?.saturating_sub(cpu).as_secs_f64()),
                    Some(p.io_syscalls()?.since(calls)),
                )
            }
            None => (None, None),
        };
        Ok(CpuUse {
            wall_s,
            client_cpu_s: client_cpu.as_secs_f64(),
            client_syscalls,
            server_cpu_s,
            server_syscalls,
        })
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Latencies in nanoseconds, 3 significant digits, from 1 µs to 100 s.
#[derive(Debug)]
pub(crate) struct Latencies(Histogram<u64>);

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
            self.p50_us, self.p99_us, self.p999_us, self.max_us
        )
    }
}

/// A report's error count, with the first error when there was one.
pub(crate) fn errors_line(errors: u64, first: Option<&str>) -> String {
    match first {
        Some(first) => format!("{errors} (first: {first})"),
        None => errors.to_string(),
    }
}

impl Latencies {
    pub(crate) fn new() -> Self {
        Latencies(
            Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("static bounds are valid"),
        )
    }

    pub(crate) fn record(&mut self, nanos: u64) {
        self.0.saturating_record(nanos.max(1_000));
    }

    /// Records `count` values of `nanos` at once.
    pub(crate) fn record_n(&mut self, nanos: u64, count: u64) {
        self.0.saturating_record_n(nanos.max(1_000), count);
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let us = |q: f64| self.0.value_at_quantile(q) as f64 / 1e3;
        LatencySummary {
            count: self.0.len(),
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: self.0.max() as f64 / 1e3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fields_are_counted_after_the_command_name() {
        let stat = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_cpu(stat), Some(Duration::from_millis(3250)));
        assert!(Pid::Current.cpu_time().is_ok());
    }

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\tsockeye\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_rss(status), Some(12345));
        assert!(Pid::Current.rss_kib().unwrap() > 0);
        assert!(Pid::Current.io_syscalls().unwrap().reads > 0);
    }

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut l = Latencies::new();
        for us in 1..=1000u64 {
            l.record(us * 1000);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
    }
}
